"""Batches of changed paths: watchfiles in a thread of its own, with a true quiet period.

watchfiles ends a batch as soon as the *set* of changed paths stops growing for one step,
so fifty saves of one file arrive as several batches. Here a batch ends only after `quiet`
seconds without any event, or `cap` seconds after its first. The thread hands batches (and
its own failure) to the event loop; `daemon` consumes them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import watchfiles

STEP_MS = 10  # how often watchfiles' loop looks for events: the latency it adds at most
READY = frozenset[Path]()  # the first item: the watches are in place


class Watcher:
    def __init__(
        self,
        dirs: set[Path],
        watch_filter: Callable[[watchfiles.Change, str], bool],
        quiet: float,
        cap: float,
        poll: bool,
    ) -> None:
        self.dirs = sorted(dirs)
        self.watch_filter = watch_filter
        self.quiet, self.cap, self.poll = quiet, cap, poll
        self._stop = threading.Event()
        self._queue: asyncio.Queue[frozenset[Path] | BaseException] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)
        self._thread.start()

    async def batches(self) -> AsyncIterator[frozenset[Path]]:
        """READY once the watches are set, then each batch; raises what the thread raised."""
        while True:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    async def close(self) -> None:
        self._stop.set()  # watchfiles sees it within a step
        await asyncio.to_thread(self._thread.join, 5)

    def _deliver(self, item: frozenset[Path] | BaseException) -> None:
        if not self._stop.is_set():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _run(self) -> None:
        try:
            self._batch(self._changes())
        except BaseException as exc:  # the loop decides: inotify limits mean polling
            self._deliver(exc)

    def _changes(self) -> Iterator[set[tuple[watchfiles.Change, str]]]:
        return watchfiles.watch(
            *self.dirs,
            watch_filter=self.watch_filter,
            debounce=int(self.cap * 1000),
            step=STEP_MS,
            rust_timeout=max(1, int(self.quiet * 1000)),
            yield_on_timeout=True,  # an empty set: `quiet` passed with no event
            stop_event=self._stop,
            raise_interrupt=False,
            force_polling=self.poll,
            recursive=False,
            ignore_permission_denied=True,
        )

    def _batch(self, changes: Iterator[set[tuple[watchfiles.Change, str]]]) -> None:
        pending: set[Path] = set()
        first = 0.0
        ready = False
        for found in changes:
            if not ready:
                ready = True
                self._deliver(READY)
            now = time.monotonic()
            if found:
                first = first if pending else now
                pending.update(Path(path) for _, path in found)
                if now - first < self.cap:
                    continue  # more may come: wait for `quiet` without any
            if pending:
                self._deliver(frozenset(pending))
                pending = set()
