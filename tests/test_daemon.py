"""The real `cmdimage-watch watch` as a subprocess: real files, the real engine, real signals.

Each test writes a tree of spec files into tmp_path, starts the daemon on it (daemon_harness),
edits files as editors do, and reads the status files the daemon writes. Build commands
append what they saw to files in `out/`, outside the watched tree, so builds are counted
without feeding the watcher. Most commands are cheap `sh -c` with `outputMode: remote` (no
Docker check); `docker build` runs only where the test is about images. Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import psutil
import pytest

from tests.conftest import remove_images
from tests.daemon_harness import (
    Watcher,
    Watchers,
    cli,
    completed,
    find_doc,
    status_docs,
    status_of,
    status_path,
)
from tests.helpers import cmdimage, filewatch, imagemap
from tests.helpers.polling import wait_until
from tests.helpers.processes import group_members, running
from tests.helpers.tree import Tree, q

CONTENT_TAG = "tilt-[0-9a-f]{16}"
DOCKER_BUILD = 'docker build --network none -q -t "$EXPECTED_REF" . >/dev/null'
DOCKERFILE = "FROM cmdimage-watch/busybox:latest\nCOPY content.txt /content.txt\n"


@pytest.fixture
def tree(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Tree]:
    """The watched tree. Most images here are `outputMode: remote` and need no engine: only
    a test that asks for `docker_client` (it builds) has its images removed afterwards."""
    started = time.time()
    made = Tree(tmp_path / "tree", tmp_path / "out", f"ciw-daemon-{uuid.uuid4().hex[:10]}")
    made.root.mkdir()
    made.out.mkdir()
    yield made
    made.kill_recorded(started)
    if "docker_client" in request.fixturenames:
        remove_images(request.getfixturevalue("docker_client"), made.uid)


@pytest.fixture
def watchers(tmp_path: Path, tree: Tree, env: dict[str, str]) -> Iterator[Watchers]:
    """Starts daemons; every one is stopped at the end (after `tree` no longer needs them)."""
    started = tree.watchers = Watchers(tmp_path / "logs", env)
    try:
        yield started
    finally:
        started.stop_all()


# --- helpers -------------------------------------------------------------------------------


def cheap(tree: Tree, name: str, script: str, **spec: Any) -> str:
    """A CmdImage whose command is `sh -c SCRIPT` and whose result is not checked in Docker."""
    return cmdimage(
        name, f"{tree.uid}-{name}", args=["sh", "-c", script], outputMode="remote", **spec
    )


def slow_script(tree: Tree) -> str:
    """Reads src.txt, records its pid, sleeps `out/delay` seconds, then records what it read:
    so out/pids counts started builds and out/builds the finished ones, with their content."""
    return (
        f"c=$(cat src.txt); d=$(cat {q(tree.out / 'delay')}); echo $$ >> {q(tree.out / 'pids')}; "
        f'sleep "$d"; {tree.record("$c")}'
    )


def image_dir(tree: Tree, name: str, content: str, dockerfile: bool = False) -> Path:
    folder = tree.root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ("content.txt" if dockerfile else "src.txt")).write_text(content)
    if dockerfile:
        (folder / "Dockerfile").write_text(DOCKERFILE)
    return folder


def wait_done(
    spec: Path, name: str, check: Callable[[dict[str, Any]], bool] = bool
) -> dict[str, Any]:
    """The `status` of CmdImage `name` once it has completed and `check(completed)` holds."""

    def found() -> dict[str, Any]:
        value = status_of(spec, "CmdImage", name)  # one read: the next may be `building`
        done: dict[str, Any] = value.get("completed") or {}
        return value if done and "building" not in value and check(done) else {}

    return wait_until(found, f"CmdImage {name} to complete ({check}) in {status_path(spec)}")


def wait_lines(tree: Tree, count: int, name: str = "builds") -> list[str]:
    """The lines of out/<name> once there are `count` of them (or more)."""

    def enough() -> list[str]:
        lines = tree.lines(name)
        return lines if len(lines) >= count else []

    return wait_until(enough, f"{count} line(s) in out/{name}")


def settled(tree: Tree, name: str = "builds") -> list[str]:
    """What out/<name> holds once the daemon has seen every change made so far and the
    work they started is over (it says so in its log: no fixed wait)."""
    assert tree.watchers is not None and tree.watchers.started
    tree.watchers.started[-1].settle()
    return tree.lines(name)


def image_content(client: docker.DockerClient, ref: str) -> str:
    out: bytes = client.containers.run(
        ref, ["cat", "/content.txt"], remove=True, network_mode="none"
    )
    return out.decode()


def content_tag(client: docker.DockerClient, ref: str) -> str:
    image_id: str = client.images.get(ref).id
    return "tilt-" + image_id.removeprefix("sha256:")[:16]


def vim_save(path: Path, text: str) -> None:
    """What vim does with its defaults: probe file, rename the original to a backup, write
    anew, drop the backup (the swap file lives throughout)."""
    swap = path.with_name(f".{path.name}.swp")
    swap.write_text("swap")
    probe = path.with_name("4913")
    probe.write_text("")
    probe.unlink()
    backup = path.with_name(path.name + "~")
    path.rename(backup)
    path.write_text(text)
    backup.unlink()
    swap.unlink()


def jetbrains_save(path: Path, text: str) -> None:
    """JetBrains' safe write: a temp file renamed over the source, the old one kept briefly."""
    tmp = path.with_name(path.name + "___jb_tmp___")
    old = path.with_name(path.name + "___jb_old___")
    tmp.write_text(text)
    path.rename(old)
    tmp.rename(path)
    old.unlink()


# --- 1-3: what a save builds -----------------------------------------------------------------


def test_a_source_save_rebuilds_once_with_a_new_content_tag(
    tree: Tree, watchers: Watchers, docker_client: docker.DockerClient
) -> None:
    folder = image_dir(tree, "app", "v1\n", dockerfile=True)
    script = f"{tree.record('$(cat content.txt)')} && {DOCKER_BUILD}"
    spec = tree.spec("app/app.yaml", cmdimage("app", tree.uid, args=["sh", "-c", script]))
    daemon = watchers.start(tree.root)
    first = wait_done(spec, "app")["ref"]
    assert re.fullmatch(f"{tree.uid}:{CONTENT_TAG}", first)

    (folder / "content.txt").write_text("v2\n")

    now = wait_done(spec, "app", lambda done: done["reason"] != "initial build")
    assert now["completed"]["reason"] == "changed files: content.txt"
    assert "error" not in now["completed"]
    ref = now["ref"]
    assert re.fullmatch(f"{tree.uid}:{CONTENT_TAG}", ref) and ref != first
    assert ref == f"{tree.uid}:{content_tag(docker_client, ref)}"
    published = status_of(spec, "ImageMap", tree.uid)
    assert (published["image"], published["imageFromLocal"]) == (ref, ref)
    assert published["buildStartTime"] == now["completed"]["startedAt"]
    assert image_content(docker_client, ref) == "v2\n"
    assert settled(tree) == ["v1", "v2"]
    assert daemon.problems() == []


def test_a_touch_or_a_same_content_rewrite_builds_nothing(tree: Tree, watchers: Watchers) -> None:
    folder = image_dir(tree, "img", "v1")
    spec = tree.spec("img/img.yaml", cheap(tree, "img", tree.record()))
    daemon = watchers.start(tree.root)
    before = wait_done(spec, "img")
    src = folder / "src.txt"

    later = time.time() + 100
    os.utime(src, (later, later))
    assert settled(tree) == ["v1"]
    src.write_text("v1")
    assert settled(tree) == ["v1"]
    assert status_of(spec, "CmdImage", "img") == before
    assert daemon.problems() == []


def test_fifty_saves_in_200_ms_build_once_with_the_last_content(
    tree: Tree, watchers: Watchers
) -> None:
    folder = image_dir(tree, "img", "start")
    spec = tree.spec("img/img.yaml", cheap(tree, "img", tree.record()))
    daemon = watchers.start(tree.root)
    wait_done(spec, "img")

    began = time.monotonic()
    for i in range(50):  # one save every 2 ms, on a schedule: a slow write is caught up
        (folder / "src.txt").write_text(f"save {i}")
        time.sleep(max(0.0, began + (i + 1) * 0.002 - time.monotonic()))
    assert time.monotonic() - began < 0.2  # else this run did not test the claim

    wait_lines(tree, 2)
    assert settled(tree) == ["start", "save 49"]
    assert wait_done(spec, "img")["completed"]["reason"] == "changed files: src.txt"
    assert daemon.problems() == []


# --- 4-5: cancelling and dependencies --------------------------------------------------------


def test_a_change_during_a_slow_build_cancels_it_and_builds_the_last_content(
    tree: Tree, watchers: Watchers
) -> None:
    folder = image_dir(tree, "img", "v1")
    (tree.out / "delay").write_text("0")
    spec = tree.spec("img/img.yaml", cheap(tree, "img", slow_script(tree)))
    daemon = watchers.start(tree.root)
    wait_done(spec, "img")
    (tree.out / "delay").write_text("60")  # longer than any wait here: only a cancel ends it
    (folder / "src.txt").write_text("v2")
    slow = wait_lines(tree, 2, "pids")[1]

    (tree.out / "delay").write_text("0")
    (folder / "src.txt").write_text("v3")

    wait_until(lambda: not group_members(int(slow)), f"the first build (pid {slow}) to end")
    rebuilt = lambda done: "error" not in done and done["reason"] != "initial build"  # noqa: E731
    done = wait_done(spec, "img", rebuilt)
    assert done["completed"]["reason"] == "changed files: src.txt"  # not the cancelled one
    assert tree.lines() == ["v1", "v3"]
    assert len(tree.pids()) == 3
    assert "inputs changed during the build (changed files: " in daemon.output()


def test_a_base_rebuild_rebuilds_its_dependent_with_the_new_base_image(
    tree: Tree, watchers: Watchers, docker_client: docker.DockerClient
) -> None:
    base_dir = image_dir(tree, "base", "v1\n", dockerfile=True)
    base_name = f"{tree.uid}-base"
    base = tree.spec("base/base.yaml", cmdimage("base", base_name, args=["sh", "-c", DOCKER_BUILD]))
    image_dir(tree, "app", "app")
    app = tree.spec(
        "app/app.yaml",
        cheap(tree, "app", tree.record("$TILT_IMAGE_0", "saw"), imageMaps=[base_name]),
    )
    daemon = watchers.start(tree.root)
    wait_done(app, "app")
    first = status_of(base, "CmdImage", "base")["ref"]
    assert tree.lines("saw") == [first]

    (base_dir / "content.txt").write_text("v2\n")

    done = wait_done(app, "app", lambda done: done["reason"] != "initial build")
    assert done["completed"]["reason"] == f"image map {base_name} updated"
    second = status_of(base, "CmdImage", "base")["ref"]
    assert re.fullmatch(f"{base_name}:{CONTENT_TAG}", second) and second != first
    assert status_of(base, "ImageMap", base_name)["imageFromLocal"] == second
    assert settled(tree, "saw") == [first, second]
    assert image_content(docker_client, second) == "v2\n"
    assert daemon.problems() == []


def test_a_hand_written_image_map_edit_rebuilds_what_is_built_from_it(
    tree: Tree, watchers: Watchers
) -> None:
    """An image built by another tool, named in an ImageMap's status by hand: editing that
    status is a new image for the dependents, as a build of ours would be."""
    external = tree.spec(
        "external.yaml",
        imagemap(
            "db", "registry.example.com/db", status={"image": "db:1", "imageFromLocal": "db:1"}
        ),
    )
    image_dir(tree, "app", "app")
    app = tree.spec(
        "app/app.yaml", cheap(tree, "app", tree.record("$TILT_IMAGE_0", "saw"), imageMaps=["db"])
    )
    daemon = watchers.start(tree.root)
    wait_done(app, "app")
    assert tree.lines("saw") == ["db:1"]

    external.write_text(external.read_text().replace('"db:1"', '"db:2"'))

    done = wait_done(app, "app", lambda done: done["reason"] != "initial build")
    assert done["completed"]["reason"] == "image map db updated"
    assert settled(tree, "saw") == ["db:1", "db:2"]
    assert status_of(external, "ImageMap", "db")["imageFromLocal"] == "db:2"
    assert daemon.problems() == []


def test_polling_sees_saves_even_within_one_second(tree: Tree, watchers: Watchers) -> None:
    """The poller compares mtimes to the second: v2 lands in the second of the first scan,
    v3 in the second of v2, both of the same size. The second look catches both."""
    folder = image_dir(tree, "img", "v1")
    spec = tree.spec("img/img.yaml", cheap(tree, "img", tree.record()))
    daemon = watchers.start(tree.root, "--poll")
    (folder / "src.txt").write_text("v2")
    wait_until(lambda: "v2" in tree.lines(), "a build of v2")
    (folder / "src.txt").write_text("v3")
    time.sleep(0.2)
    (folder / "src.txt").write_text("v4")
    wait_until(lambda: tree.lines()[-1:] == ["v4"], "a build of v4")
    assert "v4" in settled(tree)[-1]
    assert wait_done(spec, "img")["completed"]["reason"] == "changed files: src.txt"
    assert daemon.problems() == []


def test_a_storm_is_logged_with_its_size_and_cause_then_built(
    tree: Tree, watchers: Watchers
) -> None:
    specs = {}
    for name in ("a", "b", "c"):
        image_dir(tree, name, "v1")
        specs[name] = tree.spec(f"{name}/{name}.yaml", cheap(tree, name, tree.record()))
    daemon = watchers.start(tree.root, "--storm-threshold", "2")
    for name, spec in specs.items():
        wait_done(spec, name)
    for name in specs:  # a branch switch, as it looks to the watcher
        (tree.root / name / "src.txt").write_text("v2")
    assert sorted(wait_lines(tree, 6)[3:]) == ["v2", "v2", "v2"]
    daemon.wait_log("3 images to re-evaluate at once (changed files:")
    assert [p for p in daemon.problems() if "re-evaluate" not in p] == []


def test_a_storm_counts_the_images_that_need_a_changed_one(tree: Tree, watchers: Watchers) -> None:
    """One save in a base that four images need is a storm of five (a threshold of 3)."""
    image_dir(tree, "base", "v1")
    specs = {"base": tree.spec("base/base.yaml", cheap(tree, "base", tree.record()))}
    for name in ("a", "b", "c", "d"):
        image_dir(tree, name, name)
        doc = cheap(tree, name, tree.record(), imageMaps=[f"{tree.uid}-base"])
        specs[name] = tree.spec(f"{name}/{name}.yaml", doc)
    daemon = watchers.start(tree.root, "--storm-threshold", "3")
    for name, spec in specs.items():
        wait_done(spec, name)
    (tree.root / "base" / "src.txt").write_text("v2")
    daemon.wait_log(
        "5 images to re-evaluate at once (changed files: base/src.txt; 4 of them through "
        "the images they need); building in dependency order, 3 at a time"
    )


def test_a_build_of_the_whole_tree_is_told_to_leave_the_state_folder_out(
    tree: Tree, watchers: Watchers
) -> None:
    spec = tree.spec("root.yaml", cheap(tree, "whole", tree.record("whole")))
    daemon = watchers.start(tree.root)
    wait_done(spec, "whole")
    state = tree.root / ".cmdimage-watch"
    (warning,) = daemon.problems()
    assert warning.endswith(
        f"WARNING whole: its build folder {tree.root} holds {state}, which changes during "
        f"builds; add .cmdimage-watch to {tree.root / '.dockerignore'}"
    )
    daemon.stop()
    (tree.root / ".dockerignore").write_text(".cmdimage-watch\n*.status.yaml\n")
    again = watchers.start(tree.root)
    wait_done(spec, "whole")
    assert again.problems() == []


def test_spec_files_in_a_new_or_moved_folder_are_read(tree: Tree, watchers: Watchers) -> None:
    """mkdir and mv name only the folder; the spec files inside must be found all the same."""
    daemon = watchers.start(tree.root)
    made = tree.root / "made"
    made.mkdir()
    (made / "src.txt").write_text("made")
    spec = tree.spec("made/made.yaml", cheap(tree, "made", tree.record()))
    wait_done(spec, "made")
    staging = tree.out / "staging"  # outside the tree, then moved in whole
    staging.mkdir()
    (staging / "src.txt").write_text("moved")
    (staging / "moved.yaml").write_text(cheap(tree, "moved", tree.record()))
    staging.rename(tree.root / "moved")
    wait_done(tree.root / "moved" / "moved.yaml", "moved")
    (tree.root / "moved").rename(tree.root / "renamed")
    renamed = tree.root / "renamed" / "moved.yaml"
    (tree.root / "renamed" / "src.txt").write_text("renamed")
    wait_until(lambda: "renamed" in tree.lines(), "a build after the folder was renamed")
    assert sorted(settled(tree)) == ["made", "moved", "renamed"]
    assert completed(renamed, "moved")
    assert daemon.problems() == []


def test_a_dependency_cycle_is_reported_and_blocks_nothing_else(
    tree: Tree, watchers: Watchers
) -> None:
    image_dir(tree, "a", "a")
    image_dir(tree, "b", "b")
    image_dir(tree, "c", "c")
    a = tree.spec("a/a.yaml", cheap(tree, "a", tree.record(), imageMaps=[f"{tree.uid}-b"]))
    b = tree.spec("b/b.yaml", cheap(tree, "b", tree.record(), imageMaps=[f"{tree.uid}-a"]))
    c = tree.spec("c/c.yaml", cheap(tree, "c", tree.record()))
    daemon = watchers.start(tree.root)
    daemon.wait_log("start-up done")
    assert wait_done(c, "c")["completed"]["reason"] == "initial build"
    for spec, name in ((a, "a"), (b, "b")):
        reason = status_of(spec, "CmdImage", name)["waiting"]["reason"]
        assert reason == "dependency cycle: a -> b -> a; none of these builds"
    assert settled(tree) == ["c"]
    a.write_text(cheap(tree, "a", tree.record()))  # the cycle broken: both build
    wait_done(b, "b")
    assert sorted(settled(tree)) == ["a", "b", "c"]


def test_a_writer_of_ignored_files_cannot_hold_a_save_back(tree: Tree, watchers: Watchers) -> None:
    """A tool that rewrites an editor temporary every few milliseconds: the save beside it
    is built within the --debounce-max cap, not when the noise stops."""
    folder = image_dir(tree, "img", "v1")
    spec = tree.spec("img/img.yaml", cheap(tree, "img", tree.record()))
    daemon = watchers.start(tree.root, "--debounce-max", "0.5")
    wait_done(spec, "img")
    noise = folder / "build.log~"
    (folder / "src.txt").write_text("v2")
    began = time.monotonic()
    while time.monotonic() - began < 4 and tree.lines()[-1:] != ["v2"]:
        noise.write_text(str(time.monotonic()))
        time.sleep(0.005)
    assert tree.lines()[-1:] == ["v2"]  # built while the noise went on
    assert daemon.problems() == []


def test_a_build_folder_outside_the_tree_is_watched_too(tree: Tree, watchers: Watchers) -> None:
    outside = tree.out / "src"
    outside.mkdir()
    (outside / "src.txt").write_text("v1")
    spec = tree.spec("img.yaml", cheap(tree, "img", tree.record(), dir="../out/src"))
    daemon = watchers.start(tree.root)
    wait_done(spec, "img")
    (outside / "src.txt").write_text("v2")
    assert wait_lines(tree, 2) == ["v1", "v2"]
    assert (
        wait_done(spec, "img", lambda d: d["reason"] != "initial build")["completed"]["reason"]
        == "changed files: ../out/src/src.txt"
    )
    assert daemon.problems() == []


# --- 6: editors ------------------------------------------------------------------------------


def test_editor_saves_of_a_source_build_once_each_with_the_final_content(
    tree: Tree, watchers: Watchers
) -> None:
    folder = image_dir(tree, "img", "v1")
    spec = tree.spec("img/img.yaml", cheap(tree, "img", tree.record()))
    daemon = watchers.start(tree.root)
    wait_done(spec, "img")
    src = folder / "src.txt"

    vim_save(src, "v2")
    wait_lines(tree, 2)
    assert settled(tree) == ["v1", "v2"]

    jetbrains_save(src, "v3")
    wait_lines(tree, 3)
    assert settled(tree) == ["v1", "v2", "v3"]

    src.unlink()
    src.write_text("v4")
    wait_lines(tree, 4)
    assert settled(tree) == ["v1", "v2", "v3", "v4"]
    assert sorted(p.name for p in folder.iterdir()) == ["img.status.yaml", "img.yaml", "src.txt"]
    assert daemon.problems() == []


def test_an_editor_save_of_the_spec_file_builds_once_with_the_new_spec(
    tree: Tree, watchers: Watchers
) -> None:
    image_dir(tree, "img", "v1")
    script = tree.record("$(cat src.txt) $MODE")
    spec = tree.spec("img/img.yaml", cheap(tree, "img", script, env=["MODE=a"]))
    daemon = watchers.start(tree.root)
    wait_done(spec, "img")

    vim_save(spec, cheap(tree, "img", script, env=["MODE=b"]) + "\n")

    done = wait_done(spec, "img", lambda done: done["reason"] != "initial build")
    assert done["completed"]["reason"] == "spec changed"
    assert settled(tree) == ["v1 a", "v1 b"]

    vim_save(spec, spec.read_text())  # the same bytes again: nothing to do
    assert settled(tree) == ["v1 a", "v1 b"]
    assert daemon.problems() == []


# --- 7-8: broken and deleted specs ---------------------------------------------------------


def block_spec(tree: Tree, name: str, script: str, args: str | None = None) -> str:
    """A CmdImage in block style, so that a test can break one line of it."""
    return (
        "apiVersion: tilt.dev/v1alpha1\nkind: CmdImage\nmetadata:\n"
        f"  name: {name}\nspec:\n  ref: {tree.uid}-{name}\n  outputMode: remote\n"
        f"  args: {args or json.dumps(['sh', '-c', script])}\n"
    )


def test_a_broken_spec_keeps_the_last_image_and_reports_until_fixed(
    tree: Tree, watchers: Watchers
) -> None:
    folder = image_dir(tree, "img", "v1")
    good = block_spec(tree, "img", tree.record())
    spec = tree.spec("img/img.yaml", good)
    watchers.start(tree.root)
    before = wait_done(spec, "img")
    published = status_of(spec, "ImageMap", f"{tree.uid}-img")

    spec.write_text(good + "  env: [unclosed\n")

    error = wait_until(lambda: find_doc(spec, "SpecFileError", "img.yaml"), "a SpecFileError")
    assert error["apiVersion"] == "cmdimage-watch.dev/v1"
    assert re.match(rf"{re.escape(str(spec))}:\d+:\d+: \S", error["error"])
    assert status_of(spec, "CmdImage", "img") == before
    assert status_of(spec, "ImageMap", f"{tree.uid}-img") == published
    (folder / "src.txt").write_text("v2")
    assert settled(tree) == ["v1"]  # nothing of a broken spec rebuilds

    spec.write_text(good)

    done = wait_done(spec, "img", lambda done: done["reason"] != "initial build")
    assert done["completed"]["reason"] == "changed files: src.txt"
    assert [d["kind"] for d in status_docs(spec)] == ["CmdImage", "ImageMap"]
    (folder / "src.txt").write_text("v3")
    wait_lines(tree, 3)
    assert settled(tree) == ["v1", "v2", "v3"]


def test_an_invalid_field_reports_invalid_spec_and_keeps_the_image(
    tree: Tree, watchers: Watchers
) -> None:
    image_dir(tree, "img", "v1")
    good = block_spec(tree, "img", tree.record())
    spec = tree.spec("img/img.yaml", good)
    watchers.start(tree.root)
    wait_done(spec, "img")
    published = status_of(spec, "ImageMap", f"{tree.uid}-img")

    spec.write_text(block_spec(tree, "img", "", args="[]"))

    reason = wait_until(
        lambda: status_of(spec, "CmdImage", "img").get("waiting", {}).get("reason"),
        "a waiting reason",
    )
    assert reason.startswith(f"invalid spec: {spec}:8:")
    assert "spec.args" in reason
    assert status_of(spec, "ImageMap", f"{tree.uid}-img") == published
    assert settled(tree) == ["v1"]


def test_deleting_a_spec_cancels_its_build_and_its_dependent_waits(
    tree: Tree, watchers: Watchers
) -> None:
    base_dir = image_dir(tree, "base", "v1")
    (tree.out / "delay").write_text("0")
    base = tree.spec("base/base.yaml", cheap(tree, "base", slow_script(tree)))
    image_dir(tree, "app", "app")
    app = tree.spec("app/app.yaml", cheap(tree, "app", "true", imageMaps=[f"{tree.uid}-base"]))
    watchers.start(tree.root)
    wait_done(app, "app")
    (tree.out / "delay").write_text("60")
    (base_dir / "src.txt").write_text("v2")
    slow = int(wait_lines(tree, 2, "pids")[1])

    base.unlink()

    wait_until(lambda: not group_members(slow), f"the build of base (pid {slow}) to end")
    wait_until(lambda: not status_path(base).exists(), "base's status file to go")
    reason = wait_until(
        lambda: status_of(app, "CmdImage", "app").get("waiting", {}).get("reason"),
        "app to wait",
    )
    assert reason.startswith(f"waiting for image map {tree.uid}-base")
    assert tree.lines() == ["v1"]


def test_moving_a_spec_s_folder_mid_build_cancels_it_and_builds_from_the_new_place(
    tree: Tree, watchers: Watchers
) -> None:
    folder = image_dir(tree, "app", "v1")
    (tree.out / "delay").write_text("0")
    tree.spec("app/app.yaml", cheap(tree, "app", slow_script(tree)))
    watchers.start(tree.root)
    wait_lines(tree, 1)
    (tree.out / "delay").write_text("60")
    (folder / "src.txt").write_text("v2")
    slow = int(wait_lines(tree, 2, "pids")[1])

    folder.rename(tree.root / "web")  # mid-build: the build's own folder goes
    wait_until(lambda: not group_members(slow), f"the build in the old folder (pid {slow}) to end")

    moved = tree.root / "web" / "app.yaml"
    third = wait_lines(tree, 3, "pids")[2]  # built again, from the new place
    assert int(third) != slow
    assert not (tree.root / "app").exists()
    wait_until(lambda: status_path(moved).exists(), "the status file in the new folder")
    assert tree.lines() == ["v1"]  # the cancelled build recorded nothing
    assert status_of(moved, "CmdImage", "app").get("building") is not None


# --- 9-11: signals and restarts --------------------------------------------------------------


STUBBORN = "(trap '' TERM; sleep 60) & (trap '' TERM; sleep 60) & trap '' TERM; sleep 60"


def sleeps(pgid: int) -> int:
    """How many `sleep`s of process group `pgid` run."""
    count = 0
    for proc in group_members(pgid):
        with contextlib.suppress(psutil.Error):
            count += proc.name() == "sleep"
    return count


@pytest.mark.parametrize(
    ("children", "ready"),
    [("sleep 60 & sleep 60", 2), (STUBBORN, 3)],  # the second ignore SIGTERM (issue 9 §2)
    ids=["plain", "ignoring-sigterm"],
)
def test_sigterm_during_a_build_exits_0_and_leaves_no_build_process(
    tree: Tree, watchers: Watchers, children: str, ready: int
) -> None:
    image_dir(tree, "img", "v1")
    script = f"echo $$ >> {q(tree.out / 'pids')}; {children}"
    spec = tree.spec("img/img.yaml", cheap(tree, "img", script))
    daemon = watchers.start(tree.root)
    pgid = int(wait_lines(tree, 1, "pids")[0])
    wait_until(lambda: sleeps(pgid) == ready, f"{ready} sleeps, their traps set")

    daemon.signal(signal.SIGTERM)

    assert daemon.wait_exit() == 0
    assert group_members(pgid) == []
    value = status_of(spec, "CmdImage", "img")
    assert value["completed"]["error"] == "build cancelled: cmdimage-watch was stopped"
    assert "building" not in value
    assert "stopped; cancelled 1 running build(s)" in daemon.output()


def test_an_idle_daemon_stopped_says_so_last(tree: Tree, watchers: Watchers) -> None:
    """A stop is never silent: a user who pressed Ctrl-C sees that it ended, not a hang."""
    image_dir(tree, "img", "v1")
    tree.spec("img/img.yaml", cheap(tree, "img", "true"))
    daemon = watchers.start(tree.root)
    daemon.settle()
    daemon.signal(signal.SIGINT)
    assert daemon.wait_exit() == 0
    assert daemon.output().splitlines()[-1].endswith(" stopped")


def test_a_restart_with_nothing_changed_builds_nothing(
    tree: Tree, watchers: Watchers, docker_client: docker.DockerClient
) -> None:
    image_dir(tree, "app", "v1\n", dockerfile=True)
    script = f"{tree.record('$(cat content.txt)')} && {DOCKER_BUILD}"
    spec = tree.spec("app/app.yaml", cmdimage("app", tree.uid, args=["sh", "-c", script]))
    other_dir = image_dir(tree, "other", "o1")
    other = tree.spec("other/other.yaml", cheap(tree, "other", tree.record(name="other")))
    first = watchers.start(tree.root)
    wait_done(spec, "app")
    wait_done(other, "other")
    before = find_doc(spec, "CmdImage", "app")
    assert first.stop() == 0
    (other_dir / "src.txt").write_text("o2")  # a change while no daemon runs

    watchers.start(tree.root)

    # `other` changed, so it builds: proof the new daemon looked at the tree
    wait_done(other, "other", lambda done: done["reason"] == "changed files: src.txt")
    assert settled(tree) == ["v1"]
    after = find_doc(spec, "CmdImage", "app")
    assert after["metadata"] == before["metadata"]  # the same inputs digest
    assert after["status"]["ref"] == before["status"]["ref"]
    assert after["status"]["completed"]["reason"] in ("initial build", "up to date")
    assert tree.lines("other") == ["o1", "o2"]


def test_a_restart_after_sigkill_ends_the_orphaned_build_and_rebuilds(
    tree: Tree, watchers: Watchers
) -> None:
    image_dir(tree, "img", "v1")
    (tree.out / "delay").write_text("60")
    spec = tree.spec("img/img.yaml", cheap(tree, "img", slow_script(tree)))
    killed = watchers.start(tree.root)
    orphan = int(wait_lines(tree, 1, "pids")[0])
    assert "building" in status_of(spec, "CmdImage", "img")

    killed.signal(signal.SIGKILL)
    assert killed.wait_exit() == -signal.SIGKILL
    assert running(orphan)  # left behind, as a crash leaves it
    (tree.out / "delay").write_text("0")

    daemon = watchers.start(tree.root)

    wait_until(lambda: not group_members(orphan), f"the orphaned build (pid {orphan}) to end")
    done = wait_done(spec, "img")
    assert "error" not in done["completed"]
    assert done["completed"]["reason"] == "initial build"
    assert tree.lines() == ["v1"]
    assert len(tree.pids()) == 2
    assert f"ending the build of img left running (process group {orphan})" in daemon.output()


# --- 12-13: the command line around the daemon ----------------------------------------------


def test_a_second_daemon_on_the_same_tree_exits_1_and_bad_usage_exits_2(
    tree: Tree, watchers: Watchers, env: dict[str, str], tmp_path: Path
) -> None:
    image_dir(tree, "img", "v1")
    tree.spec("img/img.yaml", cheap(tree, "img", "true"))
    first = watchers.start(tree.root)

    second = cli("watch", tree.root, "--debounce", "0.05", env=env)

    assert second.returncode == 1
    assert f"another cmdimage-watch (pid {first.pid}) is watching {tree.root.resolve()}" in (
        second.stderr
    )
    missing = cli("watch", tmp_path / "missing", env=env)
    assert missing.returncode == 2
    assert f"{tmp_path / 'missing'} does not exist" in missing.stderr  # said first (issue 13)
    assert cli("watch", tree.root, "--no-such-flag", env=env).returncode == 2
    assert first.proc.poll() is None


def test_a_state_folder_removed_under_the_daemon_is_made_again(
    tree: Tree, watchers: Watchers, env: dict[str, str]
) -> None:
    """`git clean -fdx` while the daemon runs: the lock and the trigger folder come back,
    so a second daemon is still refused and `trigger` still reaches this one."""
    image_dir(tree, "img", "v1")
    spec = tree.spec("img/img.yaml", cheap(tree, "img", tree.record()))
    first = watchers.start(tree.root)
    wait_done(spec, "img")
    shutil.rmtree(tree.root / ".cmdimage-watch")
    first.wait_log(".cmdimage-watch was removed; making it again")
    wait_until(lambda: (tree.root / ".cmdimage-watch" / "lock").exists(), "the lock again")

    second = cli("watch", tree.root, env=env)
    assert second.returncode == 1
    assert f"another cmdimage-watch (pid {first.pid}) is watching" in second.stderr
    assert cli("trigger", tree.root, "img", env=env).returncode == 0
    done = wait_done(spec, "img", lambda done: done["reason"] == "manual trigger")
    assert done["completed"]["reason"] == "manual trigger"
    assert tree.lines() == ["v1", "v1"]
    assert [p for p in first.problems() if "was removed" not in p] == []


def test_trigger_rebuilds_an_up_to_date_image_and_wait_reports_the_result(
    tree: Tree, watchers: Watchers, env: dict[str, str]
) -> None:
    image_dir(tree, "ok", "v1")
    ok = tree.spec("ok/ok.yaml", cheap(tree, "ok", tree.record()))
    image_dir(tree, "bad", "v1")
    bad = tree.spec("bad/bad.yaml", cheap(tree, "bad", "exit 3"))
    watchers.start(tree.root)
    wait_done(ok, "ok")
    wait_done(bad, "bad")

    assert cli("trigger", tree.root, "ok", env=env).returncode == 0
    waited = cli("wait", tree.root, "ok", "--timeout", "30", env=env)

    assert waited.returncode == 0, waited.stderr
    value = status_of(ok, "CmdImage", "ok")
    assert value["completed"]["reason"] == "manual trigger"
    assert "error" not in value["completed"]
    assert tree.lines() == ["v1", "v1"]
    failing = cli("wait", tree.root, "bad", "--timeout", "30", env=env)
    assert failing.returncode == 1
    assert 'bad: Custom build "exit 3" failed: exit status 3' in failing.stderr


def test_wait_after_trigger_waits_for_the_triggered_build_behind_its_base(
    tree: Tree, watchers: Watchers, env: dict[str, str]
) -> None:
    base_dir = image_dir(tree, "base", "v1")
    (tree.out / "delay").write_text("0")
    tree.spec("base/base.yaml", cheap(tree, "base", slow_script(tree)))
    image_dir(tree, "app", "a1")
    app = tree.spec(
        "app/app.yaml",
        cheap(tree, "app", tree.record(name="app"), imageMaps=[f"{tree.uid}-base"]),
    )
    watchers.start(tree.root)
    wait_done(app, "app")
    (tree.out / "delay").write_text("2")
    (base_dir / "src.txt").write_text("v2")
    wait_lines(tree, 2, "pids")  # base is building; app must wait for it

    assert cli("trigger", tree.root, "app", env=env).returncode == 0
    waited = cli("wait", tree.root, "app", "--timeout", "30", env=env)

    assert waited.returncode == 0, waited.stderr
    assert tree.lines("app") == ["a1", "a1"]
    assert status_of(app, "CmdImage", "app")["completed"]["reason"] == "manual trigger"


def test_a_trigger_left_by_a_killed_daemon_is_built_by_the_next(
    tree: Tree, watchers: Watchers, env: dict[str, str]
) -> None:
    base_dir = image_dir(tree, "base", "v1")
    (tree.out / "delay").write_text("0")
    tree.spec("base/base.yaml", cheap(tree, "base", slow_script(tree)))
    image_dir(tree, "app", "a1")
    app = tree.spec(
        "app/app.yaml",
        cheap(tree, "app", tree.record(name="app"), imageMaps=[f"{tree.uid}-base"]),
    )
    killed = watchers.start(tree.root)
    wait_done(app, "app")
    (tree.out / "delay").write_text("60")
    (base_dir / "src.txt").write_text("v2")
    wait_lines(tree, 2, "pids")
    assert cli("trigger", tree.root, "app", env=env).returncode == 0
    killed.wait_log("triggered: app")  # taken, and queued behind base
    killed.signal(signal.SIGKILL)
    killed.wait_exit()
    (tree.out / "delay").write_text("0")

    watchers.start(tree.root)
    waited = cli("wait", tree.root, "app", "--timeout", "30", env=env)

    assert waited.returncode == 0, waited.stderr
    assert status_of(app, "CmdImage", "app")["completed"]["reason"] == "manual trigger"
    assert tree.lines("app") == ["a1", "a1"]


def test_trigger_without_a_daemon_exits_1_and_says_how_to_start_one(
    tree: Tree, env: dict[str, str]
) -> None:
    image_dir(tree, "img", "v1")
    tree.spec("img/img.yaml", cheap(tree, "img", "true"))

    result = cli("trigger", tree.root, "img", env=env)

    assert result.returncode == 1
    assert f"no cmdimage-watch is watching {tree.root}" in result.stderr
    assert f"start one with `cmdimage-watch watch {tree.root}`" in result.stderr


# --- 14: FileWatch -------------------------------------------------------------------------


def test_a_source_save_appears_in_the_file_watch_status(tree: Tree, watchers: Watchers) -> None:
    folder = image_dir(tree, "img", "unused")
    source = folder / "src" / "a.txt"
    source.parent.mkdir()
    source.write_text("a1")
    name = f"{tree.uid}-img"
    spec = tree.spec(
        "img/img.yaml",
        cheap(tree, "img", tree.record("$(cat src/a.txt)")),
        filewatch(f"image:{name}", watchedPaths=["src"]),
    )
    daemon = watchers.start(tree.root)
    wait_done(spec, "img")
    assert status_of(spec, "FileWatch", f"image:{name}").get("monitorStartTime")

    source.write_text("a2")

    done = wait_done(spec, "img", lambda done: done["reason"] != "initial build")
    assert done["completed"]["reason"] == "changed files: src/a.txt"
    watch = status_of(spec, "FileWatch", f"image:{name}")
    assert [event["seenFiles"] for event in watch["fileEvents"]] == [[str(source)]]
    assert watch["lastEventTime"] == watch["fileEvents"][0]["time"]
    (folder / "src.txt").write_text("not watched")  # outside watchedPaths: not a source
    assert settled(tree) == ["a1", "a2"]
    later = tree.spec("later.yaml", filewatch("later", watchedPaths=["img/src"]))
    wait_until(lambda: status_of(later, "FileWatch", "later").get("monitorStartTime"), "a start")
    assert daemon.problems() == []


def test_the_harness_stops_what_it_started(tree: Tree, watchers: Watchers) -> None:
    image_dir(tree, "img", "v1")
    tree.spec("img/img.yaml", cheap(tree, "img", "true"))
    daemon: Watcher = watchers.start(tree.root)

    watchers.stop_all()

    assert daemon.proc.returncode == 0
    assert not running(daemon.pid)
