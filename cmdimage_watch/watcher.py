"""Batches of changed paths: watchfiles in a thread of its own, with a true quiet period.

watchfiles ends a batch as soon as the *set* of changed paths stops growing for one step,
so fifty saves of one file arrive as several batches. Here a batch ends only after `quiet`
seconds without any event, or `cap` seconds after its first. The thread hands batches (and
its own failure) to the event loop; `watchset` consumes them.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path

import watchfiles

STEP_MS = 10  # how often watchfiles' loop looks for events: the latency it adds at most
READY = frozenset[Path]()  # the first item: the watches are in place
RETRIES = 3  # starts again when a folder vanished while its watch was being added


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
        self.stream = aiter(self.batches())

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
        await asyncio.sleep(0)  # what the thread handed over last reaches the queue

    def drain(self) -> set[Path]:
        """After `close`: every path seen and not yet taken from `stream`."""
        left: set[Path] = set()
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not isinstance(item, BaseException):
                left |= item
        return left

    def _deliver(self, item: frozenset[Path] | BaseException) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _run(self) -> None:
        ready = False
        for attempt in range(RETRIES + 1):
            try:
                for item in batches(self._changes(), self.watch_filter, self.quiet, self.cap):
                    ready = True
                    self._deliver(item)
                return
            except (FileNotFoundError, NotADirectoryError) as exc:
                if ready or attempt == RETRIES:  # a folder removed as its watch was added
                    self._deliver(exc)
                    return
            except BaseException as exc:  # the loop decides: inotify limits mean polling
                self._deliver(exc)
                return

    def _changes(self) -> Iterator[set[tuple[watchfiles.Change, str]]]:
        """watchfiles' changes. Every error adding a watch is raised, not swallowed
        (`ignore_permission_denied` would hide running out of inotify watches too), so
        folders gone or unreadable are left out first: their parent's watch reports them."""
        dirs = [d for d in self.dirs if os.access(d, os.R_OK | os.X_OK)]
        return watchfiles.watch(
            *dirs,
            watch_filter=None,  # filtered in batches(): ignored noise must not hold batches back
            debounce=int(self.cap * 1000),
            step=STEP_MS,
            # watchfiles hands events over only after a quiet `step`: that much of `quiet`
            # has passed already when the wait for the next event starts
            rust_timeout=max(1, int(self.quiet * 1000) - STEP_MS),
            yield_on_timeout=True,  # an empty set: `quiet` passed with no event
            stop_event=self._stop,
            raise_interrupt=False,
            force_polling=self.poll,
            recursive=False,
            ignore_permission_denied=False,
        )


def batches(
    changes: Iterable[set[tuple[watchfiles.Change, str]]],
    keep: Callable[[watchfiles.Change, str], bool],
    quiet: float,
    cap: float,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[frozenset[Path]]:
    """READY at watchfiles' first item (its watches are in place by then), then each batch:
    once `quiet` passed since its last kept event, or `cap` since its first. Events `keep`
    drops (a log file rewritten all the time) still come through watchfiles, so the
    deadlines are checked however busy that noise is."""
    pending: set[Path] = set()
    first = last = 0.0
    for step, found in enumerate(changes):
        if step == 0:
            yield READY
        now = clock()
        kept = {Path(path) for change, path in found if keep(change, path)}
        if kept:
            first = first if pending else now
            last = now
            pending |= kept
        timed_out = not found  # `quiet` passed without any event at all
        if pending and (timed_out or now - last >= quiet or now - first >= cap):
            yield frozenset(pending)
            pending = set()
    if pending:  # stopped in the middle of a batch: it is still a batch
        yield frozenset(pending)
