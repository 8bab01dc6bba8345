"""The lock and the records of running builds, with real processes."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from cmdimage_watch.lifecycle import BuildRecords, LockedError, StateLock, holder
from tests.daemon_harness import Watchers, cli, daemon_env
from tests.helpers import cmdimage, write
from tests.helpers.processes import group_members, running


@pytest.fixture
def group() -> Iterator[subprocess.Popen[bytes]]:
    """A process group of two sleeps, as a build's would be; ended by pid whatever happens."""
    proc = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60"], start_new_session=True)
    time.sleep(0.1)
    yield proc
    if proc.poll() is None:
        os.killpg(proc.pid, 9)
    proc.wait()


def test_a_second_lock_on_a_tree_names_the_holder(tmp_path: Path) -> None:
    with StateLock(tmp_path / "state", tmp_path):
        assert holder(tmp_path / "state") == os.getpid()
        with pytest.raises(LockedError) as info, StateLock(tmp_path / "state", tmp_path):
            pass
        assert (
            str(info.value) == f"another cmdimage-watch (pid {os.getpid()}) is watching {tmp_path}"
        )
    assert holder(tmp_path / "state") is None


def test_a_lock_on_a_tree_inside_or_around_a_watched_one_names_the_holder(
    tmp_path: Path,
) -> None:
    outer, inner = tmp_path / "outer", tmp_path / "outer" / "src" / "inner"
    inner.mkdir(parents=True)
    pid = os.getpid()
    with StateLock(outer / "state", outer):
        with pytest.raises(LockedError) as inside, StateLock(inner / "state", inner):
            pass
        assert str(inside.value) == (
            f"another cmdimage-watch (pid {pid}) is watching {outer}, which holds {inner}; "
            f"stop it, or watch {outer} alone"
        )
        assert holder(inner / "state") is None  # refused: its own lock is let go
    with StateLock(inner / "state", inner):
        with pytest.raises(LockedError) as around, StateLock(outer / "state", outer):
            pass
        assert str(around.value) == (
            f"another cmdimage-watch (pid {pid}) is watching {inner}, inside {outer}; "
            f"stop it, or watch {inner} alone"
        )
    with (
        StateLock(outer / "state", outer),
        StateLock(tmp_path / "next" / "state", tmp_path / "next"),
    ):
        pass  # side by side is fine; so is a state folder nobody holds any more
    with StateLock(inner / "state", inner):
        pass


def test_nested_daemons_are_refused_for_real(tmp_path: Path) -> None:
    outer, inner = tmp_path / "outer", tmp_path / "outer" / "inner"
    write(inner / "a.yaml", cmdimage("a", outputMode="remote"))
    watchers = Watchers(tmp_path / "logs", daemon_env(os.environ.get("DOCKER_HOST", "")))
    try:
        first = watchers.start(inner)
        second = cli("watch", outer, env=watchers.env, timeout=30)
        assert second.returncode == 1
        assert second.stderr.strip() == (
            f"error: another cmdimage-watch (pid {first.pid}) is watching {inner}, inside "
            f"{outer}; stop it, or watch {inner} alone"
        )
        assert first.proc.poll() is None
    finally:
        watchers.stop_all()


def test_a_build_left_running_is_ended_whole(
    tmp_path: Path, group: subprocess.Popen[bytes]
) -> None:
    records = BuildRecords(tmp_path / "builds")
    records.update("app", group.pid)
    members = [p.pid for p in group_members(group.pid)]
    assert len(members) >= 2
    assert records.end_orphans(stop_timeout=2) == ["app"]
    group.wait(5)
    assert not [pid for pid in members if psutil.pid_exists(pid) and running(pid)]
    assert list((tmp_path / "builds").iterdir()) == []


def test_a_pid_now_used_by_another_program_is_spared(
    tmp_path: Path, group: subprocess.Popen[bytes]
) -> None:
    """A record from before a reboot names a pid that a new process group now leads."""
    folder = tmp_path / "builds"
    folder.mkdir()
    started = psutil.Process(group.pid).create_time()
    (folder / "app").write_text(f"{group.pid} {started - 86400}\n")
    assert BuildRecords(folder).end_orphans(stop_timeout=1) == []
    assert group.poll() is None
    assert list(folder.iterdir()) == []
