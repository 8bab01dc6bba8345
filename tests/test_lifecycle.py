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


def test_a_build_left_running_is_ended_whole(
    tmp_path: Path, group: subprocess.Popen[bytes]
) -> None:
    records = BuildRecords(tmp_path / "builds")
    records.update("app", group.pid)
    members = [p.pid for p in psutil.process_iter() if _pgid(p.pid) == group.pid]
    assert len(members) >= 2
    assert records.end_orphans(stop_timeout=2) == ["app"]
    group.wait(5)
    assert not [pid for pid in members if psutil.pid_exists(pid) and _alive(pid)]
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


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
