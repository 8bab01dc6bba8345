"""Git-aware batches (SPEC §9): a checkout, rebase, stash or pull is one batch.

Such an operation rewrites many files over hundreds of milliseconds, and the quiet period
would cut it into several batches, each building the images it touches (and what depends
on them) again. Git holds `index.lock` in its folder while it works, and writes a line to
a reflog (`logs/HEAD`, `logs/refs/stash`) when a ref moves. So a batch that arrives while
the lock exists, or after a reflog changed, is held, with every batch after it, until the
lock has been gone for the quiet period; then they are handled as one, whose cause names
the operation as the reflog tells it (`git checkout: 124 files`). A lock that moved no ref
(a `git status` refreshing the index) holds the batch as long, and leaves its cause alone.
Fed by `daemon` batch by batch; hands what it held back to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from pathlib import Path

from loguru import logger

LOOK_S = 0.01  # how often a held batch looks whether the lock is gone
STALE_S = 30.0  # a lock older than this is a crashed git's: it holds nothing any more
RECENT_S = 3.0  # a reflog line this young belongs to the operation whose writes arrive now
QUIET_OPS = {"commit"}  # operations that move a ref but rewrite no file of the tree
AFTER_S = 0.25  # the least quiet after the lock goes: `stash` and `rebase` take it in steps

Release = Callable[[set[Path], str], None]  # (paths, cause or "")


def git_dir(root: Path) -> Path | None:
    """The git folder of the repository (or worktree) holding `root`, if any."""
    for folder in (root, *root.parents):
        dot = folder / ".git"
        with contextlib.suppress(OSError):
            if dot.is_dir():
                return dot
            if dot.is_file():  # a worktree or submodule: `gitdir: PATH`
                text = dot.read_text("utf-8").strip()
                if text.startswith("gitdir:"):
                    return (folder / text.removeprefix("gitdir:").strip()).resolve()
    return None


class GitHold:
    def __init__(self, root: Path, state: Path, quiet: float, release: Release) -> None:
        self.dir = git_dir(root)
        self.state = state  # the daemon's own files are not git's to count
        self.quiet, self.release = max(quiet, AFTER_S), release
        self.held: set[Path] = set()
        self._task: asyncio.Task[None] | None = None
        self._offers = 0  # batches held so far: a new one restarts the quiet period
        self._logs: dict[Path, int] = {}  # reflog sizes when the hold began
        self._began = 0.0  # when it began
        self._seen = self._sizes()  # reflog sizes at the last batch
        self._stale: tuple[int, int] | None = None  # (inode, mtime) of a lock left behind

    def offer(self, paths: set[Path]) -> bool:
        """Hold `paths` if a git operation is under way (or one is held already)."""
        if self.dir is None:
            return False
        before, self._seen = self._seen, self._sizes()
        moved = before != self._seen and self._operation(before, time.time()) != ""
        if self._task is None and not self._locked() and not moved:
            return False
        self.held |= paths
        self._offers += 1
        if self._task is None:
            self._logs, self._began = before, time.time()
            logger.debug("git is working in {}: holding changes until it is done", self.dir)
            self._task = asyncio.create_task(self._wait())
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _wait(self) -> None:
        while True:
            while self._locked():  # a file in .git, which is not watched: looked at
                await asyncio.sleep(LOOK_S)
                self._notice_stale()
            offers = self._offers
            await asyncio.sleep(self.quiet)
            if not self._locked() and offers == self._offers:
                break
        held, self.held, self._task = self.held, set(), None
        self._seen = self._sizes()
        operation = self._operation(self._logs, self._began)
        files = sum(1 for p in held if self.state not in p.parents and not p.is_dir())
        cause = f"git {operation}: {files} files" if operation else ""
        logger.debug("git is done{}: {} paths held", f" ({cause})" if cause else "", len(held))
        self.release(held, cause)

    def _locked(self) -> bool:
        """Whether git holds its index lock (one a crashed git left does not count)."""
        assert self.dir is not None
        try:
            found = (self.dir / "index.lock").stat()
        except OSError:
            return False
        return (found.st_ino, found.st_mtime_ns) != self._stale

    def _notice_stale(self) -> None:
        assert self.dir is not None
        lock = self.dir / "index.lock"
        try:
            found = lock.stat()
        except OSError:
            return
        if time.time() - found.st_mtime > STALE_S:
            self._stale = (found.st_ino, found.st_mtime_ns)
            logger.warning(
                "{} is {:.0f} s old: a git that crashed left it (git itself refuses to work "
                "until it is removed); handling the changes held meanwhile",
                lock,
                time.time() - found.st_mtime,
            )

    def _reflogs(self) -> list[Path]:
        assert self.dir is not None
        return [self.dir / "logs" / "refs" / "stash", self.dir / "logs" / "HEAD"]

    def _sizes(self) -> dict[Path, int]:
        return {log: _size(log) for log in self._reflogs()} if self.dir else {}

    def _operation(self, since: dict[Path, int], at: float) -> str:
        """What the reflogs say git did since `since` (their sizes then), in lines dated
        from RECENT_S before `at` on: `checkout`, `stash`, `pull`, …, the last one that
        rewrites files; "" if none (a lock taken to refresh the index, a commit)."""
        stash, head = self._reflogs()
        if _size(stash) != since.get(stash, -1) and _mtime(stash) >= at - RECENT_S:
            return "stash"  # a stash pop or drop rewrites (or removes) its log
        found = ""
        for when, what in _lines(head, since.get(head, -1)):
            word = re.match(r"[a-z-]+", what)
            if word and when >= at - RECENT_S and word[0] not in QUIET_OPS:
                found = word[0]
        return found


def _lines(log: Path, start: int) -> list[tuple[int, str]]:
    """The reflog's lines from byte `start` on: (their time, what they say)."""
    try:
        with log.open("rb") as opened:
            opened.seek(max(0, start))
            text = opened.read().decode("utf-8", "replace")
    except OSError:
        return []
    found = []
    for line in text.splitlines():  # `<old> <new> <who> <unix time> <zone>\t<what>: ...`
        head, _, what = line.partition("\t")
        when = re.search(r" (\d+) [+-]\d{4}$", head)
        found.append((int(when[1]) if when else 0, what))
    return found


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()  # removed: just now, as far as anyone can tell


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1
