"""`cmdimage-watch build DIR` as a user runs it: a real process, a real engine, real files.

A small tree holds `base` and `app`, where app needs base through `imageMaps`. Each command
appends its name to a counter file outside the tree, so a test can tell which commands ran,
and the status files written beside the specs are parsed and checked.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from tests.conftest import remove_images
from tests.helpers.tree import Tree

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
BUILD = 'docker build --network none -q {args}-t "$EXPECTED_REF" . >/dev/null'
BASE_SCRIPT = 'echo base >> "$COUNTER" && ' + BUILD.format(args="")
APP_SCRIPT = 'echo app >> "$COUNTER" && printf %s "$TILT_IMAGE_0" > "$SEEN" && ' + BUILD.format(
    args='--build-arg "BASE=$TILT_IMAGE_0" '
)


@pytest.fixture
def tree(tmp_path: Path, docker_client: docker.DockerClient, base_image: str) -> Iterator[Tree]:
    uid = f"ciw-cli-{uuid.uuid4().hex[:10]}"
    found = Tree((tmp_path / "tree").resolve(), tmp_path / "out", uid).make()
    found.add("base", BASE_SCRIPT)
    (found.root / "base" / "Dockerfile").write_text(f"FROM {base_image}\nCOPY base.txt /base.txt\n")
    (found.root / "base" / "base.txt").write_text(f"{uid}\n")
    found.add("app", APP_SCRIPT, imageMaps=[f"{uid}-base"])
    (found.root / "app" / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nCOPY app.txt /\n")
    (found.root / "app" / "app.txt").write_text("app\n")
    yield found
    remove_images(docker_client, uid)


def check_built(tree: Tree, name: str, client: docker.DockerClient, reason: str | None) -> str:
    """Check the status file of a good build of `name` (and its reason unless None); its ref."""
    image_doc, map_doc = tree.status(name)
    assert (image_doc["kind"], image_doc["metadata"]["name"]) == ("CmdImage", name)
    assert DIGEST.fullmatch(
        image_doc["metadata"]["annotations"]["cmdimage-watch.dev/inputs-digest"]
    )
    state = image_doc["status"]
    image_id = client.images.get(state["ref"]).id.removeprefix("sha256:")
    assert state["ref"] == f"{tree.uid}-{name}:tilt-{image_id[:16]}"
    assert reason is None or state["completed"]["reason"] == reason
    assert "error" not in state["completed"]
    assert state["completed"]["startedAt"] <= state["completed"]["finishedAt"]
    assert map_doc == {
        "apiVersion": "tilt.dev/v1alpha1",
        "kind": "ImageMap",
        "metadata": {"name": f"{tree.uid}-{name}"},
        "status": {
            "image": state["ref"],
            "imageFromLocal": state["ref"],
            "imageFromCluster": state["ref"],
            "buildStartTime": state["completed"]["startedAt"],
        },
    }
    ref: str = state["ref"]
    return ref


def digest_of(tree: Tree, name: str) -> str:
    digest: str = tree.status(name)[0]["metadata"]["annotations"][
        "cmdimage-watch.dev/inputs-digest"
    ]
    return digest


def test_build_then_nothing_to_do_then_force(
    tree: Tree, docker_client: docker.DockerClient
) -> None:
    hour_ago = time.time() - 3600
    for path in tree.root.rglob("*"):  # a tree at rest: its hashes can be kept (RACY_NS)
        os.utime(path, (hour_ago, hour_ago))
    first = tree.cli("-v")

    assert first.returncode == 0, first.stderr
    assert "hashed 4 source file(s) of 2 image(s): 4 read" in first.stderr
    assert tree.runs() == ["base", "app"]
    base_ref = check_built(tree, "base", docker_client, "initial build")
    app_ref = check_built(tree, "app", docker_client, "initial build")
    assert tree.seen.read_text() == base_ref
    digests = (digest_of(tree, "base"), digest_of(tree, "app"))

    second = tree.cli("-v")

    assert second.returncode == 0, second.stderr
    assert tree.runs() == ["base", "app"]  # no command ran
    # the content hashes of the first run were kept: no source is read again
    assert "hashed 4 source file(s) of 2 image(s): 0 read" in second.stderr
    assert check_built(tree, "base", docker_client, "up to date") == base_ref
    assert check_built(tree, "app", docker_client, "up to date") == app_ref
    assert (digest_of(tree, "base"), digest_of(tree, "app")) == digests

    forced = tree.cli("--force")

    assert forced.returncode == 0, forced.stderr
    assert tree.runs() == ["base", "app", "base", "app"]
    assert check_built(tree, "base", docker_client, "manual trigger") == base_ref
    assert check_built(tree, "app", docker_client, "manual trigger") == app_ref


def test_an_image_gone_from_the_engine_is_built_again_and_says_why(
    tree: Tree, docker_client: docker.DockerClient
) -> None:
    assert tree.cli("base").returncode == 0
    base_ref = check_built(tree, "base", docker_client, "initial build")
    for tag in docker_client.images.get(base_ref).tags:  # `docker rmi`, tag by tag
        docker_client.images.remove(tag)

    again = tree.cli("base")

    assert again.returncode == 0, again.stderr
    assert tree.runs() == ["base", "base"]
    check_built(tree, "base", docker_client, f"{base_ref} is no longer in the engine")


def test_a_failing_image_exits_1_with_its_error_in_status(
    tree: Tree, docker_client: docker.DockerClient
) -> None:
    tree.add("broken", 'echo broken >> "$COUNTER"; exit 5')

    done = tree.cli()

    assert done.returncode == 1, done.stderr
    assert sorted(tree.runs()) == ["app", "base", "broken"]
    check_built(tree, "app", docker_client, "initial build")
    image_doc, map_doc = tree.status("broken")
    state = image_doc["status"]
    log = tree.root / ".cmdimage-watch" / "logs" / "broken.log"
    script = 'echo broken >> "$COUNTER"; exit 5'
    assert state["completed"]["error"] == (
        f"Custom build {json.dumps(script)} failed: exit status 5; see the log {log}"
    )
    assert "ref" not in state
    assert "cmdimage-watch.dev/inputs-digest" not in image_doc["metadata"].get("annotations", {})
    assert map_doc["status"] == {}
    assert log.read_text() == f"$ {script}\n"


def test_a_failure_after_a_success_clears_the_ref_and_keeps_the_published_image(
    tree: Tree, docker_client: docker.DockerClient
) -> None:
    """§3.6: the previous status.ref is cleared; the ImageMap keeps its last good image."""
    assert tree.cli("base").returncode == 0
    base_ref = check_built(tree, "base", docker_client, "initial build")
    (tree.root / "base" / "base.txt").unlink()  # COPY base.txt now fails

    failed = tree.cli("base")

    assert failed.returncode == 1
    image_doc, map_doc = tree.status("base")
    assert image_doc["status"]["completed"]["error"].startswith(
        f"Custom build {json.dumps(BASE_SCRIPT)} failed: exit status 1; see the log "
    )
    assert "ref" not in image_doc["status"]
    assert map_doc["status"]["imageFromLocal"] == base_ref


def test_build_named_images_builds_them_and_what_they_need(
    tree: Tree, docker_client: docker.DockerClient
) -> None:
    tree.add("other", 'echo other >> "$COUNTER"')

    done = tree.cli("app")

    assert done.returncode == 0, done.stderr
    assert tree.runs() == ["base", "app"]
    check_built(tree, "app", docker_client, "initial build")
    assert "completed" not in tree.status("other")[0]["status"]


def test_build_of_some_images_keeps_the_hashes_of_the_others(tree: Tree) -> None:
    hour_ago = time.time() - 3600
    for path in tree.root.rglob("*"):  # at rest, so that the hashes are kept at all
        os.utime(path, (hour_ago, hour_ago))
    assert tree.cli().returncode == 0
    assert tree.cli("base").returncode == 0
    kept = json.loads((tree.root / ".cmdimage-watch" / "hashes.json").read_text())["entries"]
    assert str(tree.root / "app" / "app.txt") in kept
    assert str(tree.root / "base" / "base.txt") in kept


def test_unknown_name_is_bad_usage(tree: Tree) -> None:
    done = tree.cli("app", "nope")

    assert done.returncode == 2
    assert done.stderr == f"error: no CmdImage named nope in {tree.root} (known: app, base)\n"
    assert tree.runs() == []


def test_unwritable_status_and_state_are_logged_never_a_crash(tree: Tree) -> None:
    """SPEC §7: disk full or a read-only status folder is logged and retried; as root no
    permission stops a write, so a folder standing where the file must go plays the fault."""
    (tree.root / "base" / "base.status.yaml").mkdir()
    result = tree.cli("base")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"could not write {tree.root / 'base' / 'base.status.yaml'}" in result.stderr
    assert tree.runs() == ["base"]
    (tree.root / "base" / "base.status.yaml").rmdir()
    logs = tree.root / ".cmdimage-watch" / "logs"
    for log in logs.iterdir():
        log.unlink()
    logs.rmdir()
    logs.write_text("a file where the log folder goes")
    result = tree.cli("base", "--force")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (image_doc,) = [d for d in tree.status("base") if d["kind"] == "CmdImage"]
    assert str(logs) in image_doc["status"]["completed"]["error"]
    assert tree.runs() == ["base"]  # the command never started without its log
