"""What outlives one daemon in the state folder: the lock and the running builds' records.

`StateLock` keeps a second daemon off a tree. `BuildRecords` writes one file per running
build (its process group and start time) so that a daemon restarted after SIGKILL can end
the builds its predecessor left behind. `daemon` uses both; `cli` asks the lock who holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from pathlib import Path
from types import TracebackType
from typing import IO

import psutil
from loguru import logger

from cmdimage_watch.settings import state_file_name


class LockedError(Exception):
    """Another daemon watches the tree; str() says which."""


class StateLock:
    def __init__(self, state_dir: Path, root: Path) -> None:
        self.path = state_dir / "lock"
        self.root = root
        self._file: IO[str] | None = None

    def __enter__(self) -> StateLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "?"
            handle.close()
            raise LockedError(
                f"another cmdimage-watch (pid {pid}) is watching {self.root}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        try:
            refuse_nested(self.root, self.path.parent.name)
        except LockedError:
            self.__exit__(None, None, None)
            raise
        return self

    def held(self) -> bool:
        """Whether the lock file on disk is still the one this process holds: `rm -rf` of
        the state folder (a `git clean -fdx`) takes it away, and a second daemon could start."""
        if self._file is None:
            return False
        try:
            return os.fstat(self._file.fileno()).st_ino == self.path.stat().st_ino
        except OSError:
            return False

    def take_again(self) -> None:
        """Hold a new lock file in place of the one taken away; LockedError if another
        daemon took the tree meanwhile."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.__enter__()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the lock
            self._file = None


def refuse_nested(root: Path, state_name: str) -> None:
    """LockedError when a live daemon watches a tree that holds `root` or lies inside it:
    both would build the same images and write the same status files."""
    for parent in root.parents:
        pid = holder(parent / state_name)
        if pid is not None:
            raise LockedError(
                f"another cmdimage-watch (pid {pid}) is watching {parent}, which holds {root}; "
                f"stop it, or watch {parent} alone"
            )
    for state_dir in _state_dirs_under(root, state_name):
        pid = holder(state_dir)
        if pid is not None:
            raise LockedError(
                f"another cmdimage-watch (pid {pid}) is watching {state_dir.parent}, inside "
                f"{root}; stop it, or watch {state_dir.parent} alone"
            )


def _state_dirs_under(root: Path, state_name: str) -> list[Path]:
    """The state folders of trees below `root` (not its own), walking folders only and
    skipping hidden ones, as the tree's own walk does."""
    found, todo = [], [root]
    while todo:
        folder = todo.pop()
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                if entry.name == state_name and folder != root:
                    found.append(Path(entry.path))
                elif not entry.name.startswith("."):
                    todo.append(Path(entry.path))
    return found


def holder(state_dir: Path) -> int | None:
    """The pid of the daemon watching this tree, or None when none is."""
    path = state_dir / "lock"
    try:
        with path.open("r", encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = handle.read().strip()
                return int(text) if text.isdigit() else -1
            return None
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


class BuildRecords:
    """`<state>/builds/<image>`: "<pgid> <create time>" of each running build."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def update(self, name: str, pid: int | None) -> None:
        path = self.folder / state_file_name(name)
        try:
            if pid is None:
                path.unlink(missing_ok=True)
                return
            self.folder.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{pid} {psutil.Process(pid).create_time()}\n", encoding="utf-8")
        except psutil.NoSuchProcess:
            return  # a quick command, over already: nothing a later daemon must end
        except (OSError, psutil.Error) as exc:
            logger.warning("could not record the build of {}: {}", name, exc)

    def end_orphans(self, stop_timeout: float) -> list[str]:
        """End the process groups of builds a killed daemon left running; their names."""
        ended = []
        for path in sorted(self.folder.glob("*")) if self.folder.is_dir() else []:
            pgid = _live_group(path)
            if pgid is not None:
                logger.warning(
                    "ending the build of {} left running (process group {})", path.name, pgid
                )
                _end_group(pgid, stop_timeout)
                ended.append(path.name)
            path.unlink(missing_ok=True)
        return ended


def _live_group(record: Path) -> int | None:
    """The recorded process group, if a process of that build is still in it. While its
    leader lives, it must be the very process recorded (same start time): a pid reused by
    another program is never taken for it. Linux reuses no pid that is still a group's id,
    so once the leader is gone, the group's members are the build's."""
    try:
        pid_text, created_text = record.read_text(encoding="utf-8").split()
        pgid, created = int(pid_text), float(created_text)
    except (OSError, ValueError):
        return None
    try:
        if abs(psutil.Process(pgid).create_time() - created) > 0.01:
            return None  # that pid is someone else's now
    except psutil.NoSuchProcess:
        pass
    except psutil.Error:
        return None
    for process in psutil.process_iter(["create_time"]):
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(process.pid) == pgid and process.info["create_time"] >= created - 0.01:
                return pgid
    return None


def _end_group(pgid: int, stop_timeout: float) -> None:
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + stop_timeout
    while time.monotonic() < deadline and _group_alive(pgid):
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
