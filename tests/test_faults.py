"""Faults of the disk, injected for real into a running daemon (issue 9 §2, SPEC §7 "disk
full, status folder read-only: logged; retried on the next change; never a crash"):

- the state folder on a tiny tmpfs, filled up, then freed;
- the folder of a spec (and its status file) bind-mounted read-only, then read-write.
As root, `chmod` stops no write, so real mounts play the faults. Each mount is undone by
the test, whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cmdimage_watch.statusfiles import read_status_file
from tests.daemon_harness import Watchers, completed
from tests.helpers import cmdimage, filewatch
from tests.helpers.polling import wait_until
from tests.helpers.tree import Tree


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def mounted(target: Path, *args: str) -> Iterator[None]:
    mount(*args, str(target))
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False, timeout=30)


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path / "tree", tmp_path / "out", "ciw-faults").make()


def image(tree: Tree, source: Path) -> Path:
    """One cheap image whose source is `source`'s folder, recording each build."""
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text("v1")
    script = tree.record(f"$(cat {source})")
    return tree.spec(
        "app/app.yaml",
        cmdimage("app", args=["sh", "-c", script], outputMode="remote"),
        filewatch("image:app", watchedPaths=[str(source.parent)]),
    )


def test_a_full_state_folder_is_logged_and_the_next_change_builds(
    tree: Tree, watchers: Watchers
) -> None:
    state = tree.root / ".cmdimage-watch"
    state.mkdir()
    spec = image(tree, tree.root / "src" / "src.txt")
    with mounted(state, "-t", "tmpfs", "-o", "size=256k", "tmpfs"):
        daemon = watchers.start(tree.root)
        wait_until(
            lambda: completed(spec, "app").get("reason") == "initial build", "the first build"
        )
        filler = state / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()

        (tree.root / "src" / "src.txt").write_text("v2")
        failed = wait_until(
            lambda: completed(spec, "app").get("error", ""), "the build to fail on the full disk"
        )
        assert "No space left on device" in failed
        assert daemon.proc.poll() is None

        filler.unlink()
        (tree.root / "src" / "src.txt").write_text("v3")
        wait_until(lambda: tree.lines()[-1:] == ["v3"], "a build once there is room again")
        wait_until(
            lambda: completed(spec, "app").get("reason") == "changed files: ../src/src.txt",
            "its status",
        )
        for kept in state.rglob("*.json"):  # no torn file: each one whole, or not there
            json.loads(kept.read_text())
        assert "Traceback" not in daemon.output()


def test_a_read_only_status_folder_is_logged_and_written_once_it_is_writable(
    tree: Tree, watchers: Watchers
) -> None:
    spec = image(tree, tree.root / "src" / "src.txt")
    folder = spec.parent
    daemon = watchers.start(tree.root)
    wait_until(lambda: completed(spec, "app").get("reason") == "initial build", "the first build")

    with mounted(folder, "--bind", str(folder)):
        mount("-o", "remount,ro,bind", str(folder))
        (tree.root / "src" / "src.txt").write_text("v2")
        wait_until(lambda: tree.lines() == ["v1", "v2"], "the build while read-only")
        daemon.wait_log(f"could not write {folder / 'app.status.yaml'}")
        assert completed(spec, "app")["reason"] == "initial build"  # the old status stands
        mount("-o", "remount,rw,bind", str(folder))
        (tree.root / "src" / "src.txt").write_text("v3")
        wait_until(lambda: tree.lines() == ["v1", "v2", "v3"], "the build once writable")
        wait_until(
            lambda: completed(spec, "app").get("reason") == "changed files: ../src/src.txt",
            "the status written once the folder is writable",
        )
    docs = read_status_file(folder / "app.status.yaml")
    assert docs[0]["metadata"]["name"] == "app"
    assert daemon.proc.poll() is None
    assert "Traceback" not in daemon.output()
