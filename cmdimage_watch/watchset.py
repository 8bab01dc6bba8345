"""The watchers of a tree as one stream: `Ready` once watches are in place, then `Batch`es.

When the folders to watch change (the consumer calls `rewatch` while handling a batch), a
new watcher starts and the old one keeps reporting until the new one's watches are in
place, so no change falls between the two. When inotify runs out of watches or instances,
the tree is polled instead, with one warning naming the limit. Watchers come from a
factory (`watcher.Watcher` in the daemon, a scripted stream in tests). Consumed by
`daemon` until its `stop` is set.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from loguru import logger

from cmdimage_watch.watcher import READY


class Watching(Protocol):
    """What a watcher gives: a stream of batches, READY first, and a way to stop."""

    stream: AsyncIterator[frozenset[Path]]

    async def close(self) -> None: ...

    def drain(self) -> set[Path]:
        """After `close`: every path it saw and has not yet handed over."""


Factory = Callable[[set[Path], bool], Watching]  # (folders to watch, poll) -> a watcher


@dataclass(frozen=True)
class Ready:
    """The current watcher's watches are in place: from now on no change is missed."""

    poll: bool


@dataclass(frozen=True)
class Batch:
    paths: set[Path]
    poll: bool  # seen by polling, whose mtimes are to the second


class WatchSet:
    def __init__(
        self, factory: Factory, dirs: Callable[[], set[Path]], poll: bool, stop: asyncio.Event
    ) -> None:
        self._factory, self._dirs, self.poll, self._stop = factory, dirs, poll, stop
        self.watched: set[Path] = set()
        self.new_dirs: set[Path] = set()  # watched since the last Ready
        self._rewatch = False
        self._kick = asyncio.Event()  # rewatch_now: start the new watcher without a batch
        self._waits: dict[Watching, asyncio.Future[frozenset[Path]]] = {}

    def rewatch(self) -> None:
        """The folders to watch changed: start a watcher on them after this batch."""
        self._rewatch = True

    def rewatch_now(self) -> None:
        """The same, between batches (changes held for a while, then handled)."""
        self._rewatch = True
        self._kick.set()

    def take_new_dirs(self) -> set[Path]:
        new, self.new_dirs = self.new_dirs, set()
        return new

    async def __aiter__(self) -> AsyncGenerator[Ready | Batch, None]:
        stopping = asyncio.create_task(self._stop.wait())
        kicked = asyncio.create_task(self._kick.wait())
        current, retiring = self._start(), list[Watching]()
        try:
            while True:
                done = await self._next({stopping, kicked}, current, retiring)
                if stopping in done:
                    return
                if kicked in done:
                    self._kick.clear()
                    kicked = asyncio.create_task(self._kick.wait())
                    if self._rewatch:
                        retiring.append(current)
                        current = self._start()
                for watcher, future in [(w, f) for w, f in self._waits.items() if f in done]:
                    if self._waits.pop(watcher, None) is None:
                        continue  # retired (and its wait closed) by a Ready of this round
                    batch = self._result(future, watcher is current)
                    if batch is None:  # out of inotify watches: poll from now on
                        await watcher.close()  # its thread ended; its wake pipe is freed
                        current = self._start()
                    elif batch is READY and watcher is current:
                        left = await self._retire(retiring)
                        retiring = []
                        if left:  # what the old ones saw before these watches were in place
                            yield Batch(left, self.poll)
                        yield Ready(self.poll)
                    elif batch is not READY:
                        yield Batch(set(batch), self.poll)
                        if self._rewatch:
                            retiring.append(current)
                            current = self._start()
        finally:
            stopping.cancel()
            kicked.cancel()
            await self._retire([current, *retiring])

    async def _next(
        self, own: set[asyncio.Task[Any]], current: Watching, retiring: list[Watching]
    ) -> set[asyncio.Future[Any]]:
        for watcher in (current, *retiring):
            if watcher not in self._waits:
                self._waits[watcher] = asyncio.ensure_future(anext(watcher.stream))
        waiting: set[asyncio.Future[Any]] = {*own, *self._waits.values()}
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        return done

    def _result(
        self, future: asyncio.Future[frozenset[Path]], current: bool
    ) -> frozenset[Path] | None:
        """The batch; None when the current watcher ran out of an inotify limit (so the
        tree is polled from now on); what else a watcher raised, raised."""
        try:
            return future.result()
        except (OSError, RuntimeError) as exc:
            limit = inotify_limit(exc)
            if not current or self.poll or limit is None:
                raise
            self.poll = True
            logger.warning(
                "{} ({}); polling every watched folder instead, which sees saves later and "
                "costs more CPU. To watch with inotify again, raise it (sudo sysctl -w "
                "{}=524288, and a line in /etc/sysctl.d/ to keep it) and restart",
                LIMITS[limit],
                exc,
                limit,
            )
            return None

    def _start(self) -> Watching:
        self._rewatch = False
        before, self.watched = self.watched, self._dirs()
        self.new_dirs |= self.watched - before if before else set()
        return self._factory(self.watched, self.poll)

    async def _retire(self, watchers: list[Watching]) -> set[Path]:
        """Close these watchers; every path they saw and the set has not yielded yet (a
        batch waiting in this very round included), so that no change is lost."""
        left: set[Path] = set()
        for watcher in watchers:
            waiting = self._waits.pop(watcher, None)
            if waiting is not None and waiting.done() and not waiting.cancelled():
                if waiting.exception() is None:
                    left |= waiting.result()
            elif waiting is not None:
                waiting.cancel()
            await watcher.close()
            left |= watcher.drain()
        return left


WATCHES, INSTANCES = "fs.inotify.max_user_watches", "fs.inotify.max_user_instances"
LIMITS = {
    WATCHES: f"out of inotify watches ({WATCHES})",
    INSTANCES: f"out of inotify instances ({INSTANCES}) or of file descriptors (ulimit -n)",
}


def inotify_limit(exc: BaseException) -> str | None:
    """The sysctl whose limit `exc` hit, if any. watchfiles reports the watch limit as an
    OSError without errno ("OS file watch limit reached ... MaxFilesWatch"), and a failed
    inotify_init as a RuntimeError ("Too many open files (os error 24)")."""
    text = str(exc)
    if isinstance(exc, OSError) and (
        exc.errno == errno.ENOSPC or "watch limit" in text or "MaxFilesWatch" in text
    ):
        return WATCHES
    if getattr(exc, "errno", None) == errno.EMFILE or "os error 24" in text:
        return INSTANCES
    return None
