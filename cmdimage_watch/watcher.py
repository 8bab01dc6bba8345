"""Batches of changed paths: watchfiles' Rust watcher in a thread of its own, with a true
quiet period.

watchfiles ends a batch as soon as the *set* of changed paths stops growing for one step,
so fifty saves of one file arrive as several batches. Here a batch ends only after `quiet`
seconds without any event, or `cap` seconds after its first. Between batches the Rust
watcher looks for events every IDLE_STEP_MS and has no timeout to wake up for; while a
batch waits out its quiet period it looks every BATCH_STEP_MS, so the batch ends within that
much of its deadline. The thread hands batches (and its own failure) to the event loop;
`watchset` consumes them.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import watchfiles
from watchfiles._rust_notify import RustNotify  # watchfiles' documented Rust backend

from cmdimage_watch import timeline

# How often the Rust watcher looks for events. A change is handed over one step after the
# step that saw it, so the idle step is the latency it adds at most (half on average); and
# each look wakes the process (about 0.4% of a core at 10 ms on a 2-core VM).
IDLE_STEP_MS, BATCH_STEP_MS = 10, 2
POLL_DELAY_MS = 300  # --poll: how often the tree is scanned (watchfiles' default)
READY = frozenset[Path]()  # the first item: the watches are in place
RETRIES = 3  # starts again when a folder vanished while its watch was being added

Changes = set[tuple[int, str]]  # watchfiles' raw (Change, path) pairs
Wait = Callable[[float | None], tuple[Changes, float] | None]


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
        self._stop.set()  # the Rust watcher sees it within a step
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
        for attempt in range(RETRIES + 1):
            try:
                notify = self._notify()
            except (FileNotFoundError, NotADirectoryError) as exc:
                if attempt < RETRIES:
                    continue  # a folder removed as its watch was added
                self._deliver(exc)
                return
            except BaseException as exc:  # the loop decides: inotify limits mean polling
                self._deliver(exc)
                return
            try:
                with notify:
                    self._deliver(READY)
                    found = batches(self._wait(notify), self.watch_filter, self.quiet, self.cap)
                    for item in found:
                        self._deliver(item)
            except BaseException as exc:
                self._deliver(exc)
            return

    def _notify(self) -> RustNotify:
        """The Rust watcher, its watches in place. Every error adding a watch is raised,
        not swallowed (`ignore_permission_denied` would hide running out of inotify
        watches too), so folders gone or unreadable are left out first: their parent's
        watch reports them."""
        dirs = [str(d) for d in self.dirs if os.access(d, os.R_OK | os.X_OK)]
        return RustNotify(dirs, False, self.poll, POLL_DELAY_MS, False, False)

    def _wait(self, notify: RustNotify) -> Wait:
        cap_ms = int(self.cap * 1000)

        def wait(timeout: float | None) -> tuple[Changes, float] | None:
            step = IDLE_STEP_MS if timeout is None else BATCH_STEP_MS
            limit = 0 if timeout is None else max(1, math.ceil(timeout * 1000))
            found = notify.watch(cap_ms, step, limit, self._stop)
            if found == "timeout":
                return set(), time.monotonic()
            if isinstance(found, str):  # "stop" (or "signal", which this thread never gets)
                return None
            # handed over once a step passed without a new one: it came that long ago, at least
            return found, time.monotonic() - step / 1000

        return wait


def batches(
    wait: Wait,
    keep: Callable[[watchfiles.Change, str], bool],
    quiet: float,
    cap: float,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[frozenset[Path]]:
    """Each batch, once `quiet` passed since its last kept event or `cap` since its first.
    `wait(timeout)` gives the next changes and when the last of them came, or an empty
    set once `timeout` seconds passed without any (None: no limit); None once stopped.
    Events `keep` drops (a log file rewritten all the time) still come through, so the
    deadline is checked however busy that noise is."""
    pending: set[Path] = set()
    first = last = 0.0
    while True:
        seen = wait(max(0.0, min(last + quiet, first + cap) - clock()) if pending else None)
        if seen is None:
            break
        found, at = seen
        kept = {Path(path) for change, path in found if keep(watchfiles.Change(change), path)}
        if kept:
            timeline.mark("seen", len(kept))
            first = first if pending else at
            last = at
            pending |= kept
        timed_out = not found  # the time asked for passed without any event at all
        if pending and (timed_out or clock() >= min(last + quiet, first + cap)):
            timeline.mark("batch", len(pending))
            yield frozenset(pending)
            pending = set()
    if pending:  # stopped in the middle of a batch: it is still a batch
        yield frozenset(pending)
