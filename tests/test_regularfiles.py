"""Files that are not regular files never block a read: FIFOs, sockets, devices, folders.

Unit tests of `regularfiles` on real special files, then the commands and the daemon on a
tree that holds them (SPEC §7): each is skipped with a warning naming it, nothing hangs.
Every subprocess has a timeout, so a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import os
import signal
import socket
import uuid
from pathlib import Path

import pytest

from cmdimage_watch.regularfiles import NotRegularFile, open_regular, read_regular
from tests.daemon_harness import Watchers, cli, completed
from tests.helpers import cmdimage, write
from tests.helpers.polling import wait_until
from tests.helpers.tree import Tree


def special_files(folder: Path) -> dict[str, Path]:
    """One of each kind that is not a regular file, and one symlink to a device."""
    folder.mkdir(parents=True, exist_ok=True)
    fifo, sock, sub, dev = (folder / n for n in ("fifo", "sock", "sub", "zero"))
    os.mkfifo(fifo)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(sock))
    sub.mkdir()
    dev.symlink_to("/dev/zero")
    return {"a FIFO": fifo, "a socket": sock, "a folder": sub, "a device": dev}


def test_special_files_are_refused_without_blocking(tmp_path: Path) -> None:
    for kind, path in special_files(tmp_path).items():
        with pytest.raises(NotRegularFile) as caught:
            read_regular(path)
        assert caught.value.kind == kind
        assert str(caught.value) == f"{path} is {kind}, not a regular file; skipped"


def test_a_regular_file_and_a_symlink_to_one_are_read(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert read_regular(tmp_path / "link") == b"abc"
    assert read_regular(tmp_path / "a", 2) == b"ab"
    with open_regular(tmp_path / "a") as f:
        assert f.read() == b"abc"
    with pytest.raises(FileNotFoundError):
        read_regular(tmp_path / "missing")


def hostile_tree(root: Path, out: Path) -> Path:
    """An image whose build folder holds a FIFO and a symlink to /dev/zero, a FIFO and a
    dangling symlink named as spec files, and a FIFO where a status file would go."""
    spec = write(
        root / "app" / "app.yaml",
        cmdimage("app", args=["sh", "-c", f"echo built >> {out}"], outputMode="remote"),
    )
    (root / "app" / "src.txt").write_text("v1")
    os.mkfifo(root / "app" / "pipe")
    (root / "app" / "zero").symlink_to("/dev/zero")
    os.mkfifo(root / "x.yaml")
    (root / "y.yaml").symlink_to(root / "nowhere.yaml")
    write(root / "other" / "other.yaml", cmdimage("other", outputMode="remote"))
    os.mkfifo(root / "other" / "other.status.yaml")
    return spec


def test_commands_skip_special_files_with_a_warning_and_never_hang(
    tmp_path: Path, env: dict[str, str]
) -> None:
    root, out = tmp_path / "tree", tmp_path / "built"
    spec = hostile_tree(root, out)

    validated = cli("validate", root, env=env, timeout=30)
    assert validated.returncode == 0, validated.stderr
    assert f"{root / 'x.yaml'} is a FIFO, not a regular file; skipped" in validated.stderr
    assert f"{root / 'y.yaml'} is a symlink to nothing" in validated.stderr

    built = cli("build", root, env=env, timeout=30)
    assert built.returncode == 0, built.stderr  # both built; other's status file is logged
    assert out.read_text() == "built\n"
    assert completed(spec, "app")["reason"] == "initial build"
    assert f"{root / 'app' / 'pipe'} is a FIFO, not a regular file; skipped: not a source" in (
        built.stderr
    )
    assert f"{root / 'app' / 'zero'} is a device" in built.stderr
    assert f"could not write {root / 'other' / 'other.status.yaml'}" in built.stderr
    assert (root / "other" / "other.status.yaml").is_fifo()  # never replaced

    for command in ("status", "graph"):
        shown = cli(command, root, env=env, timeout=30)
        assert "app" in shown.stdout, (command, shown.stderr)


def test_a_fifo_made_while_the_daemon_runs_does_not_wedge_it(
    tmp_path: Path, watchers: Watchers
) -> None:
    tree = Tree(tmp_path / "tree", tmp_path / "out", f"ciw-fifo-{uuid.uuid4().hex[:8]}")
    tree.out.mkdir()
    spec = tree.spec(
        "app/app.yaml", cmdimage("app", args=["sh", "-c", tree.record()], outputMode="remote")
    )
    (tree.root / "app" / "src.txt").write_text("v1")
    daemon = watchers.start(tree.root)
    wait_until(lambda: tree.lines() == ["v1"], "the first build")

    os.mkfifo(tree.root / "app" / "pipe.yaml")  # a spec file's name, in the build folder
    os.mkfifo(tree.root / "app" / "pipe")
    (tree.root / "app" / "src.txt").write_text("v2")

    wait_until(lambda: tree.lines() == ["v1", "v2"], "a build after the FIFOs appeared")
    wait_until(
        lambda: completed(spec, "app").get("reason") == "changed files: src.txt",
        "its status to name the changed file",
    )
    daemon.wait_log(f"{tree.root / 'app' / 'pipe.yaml'} is a FIFO, not a regular file")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(15) == 0
