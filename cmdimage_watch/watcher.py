"""Batches of changed paths: watchfiles' Rust watcher in a thread of its own, with a true
quiet period.

watchfiles ends a batch as soon as the *set* of changed paths stops growing for one step,
so fifty saves of one file arrive as several batches. Here a batch ends only after `quiet`
seconds without any event, or `cap` seconds after its first.

watchfiles' Rust loop has no blocking wait: it sleeps a step, looks, and sleeps again. So
between batches the thread sleeps in the kernel on a `Doorbell`, a second inotify instance
on the same folders that is only read to wake up, and asks the Rust watcher what changed
once it rings, looking every FINE_STEP_MS; while a batch waits out its quiet period it looks
as often, so the batch ends within that much of its deadline. Without a doorbell (polling,
or no inotify watches left for it) the idle thread looks every IDLE_STEP_MS. The thread
hands batches (and its own failure) to the event loop; `watchset` consumes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import select
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import inotify_simple
import watchfiles
from loguru import logger
from watchfiles._rust_notify import RustNotify  # watchfiles' documented Rust backend

from cmdimage_watch import timeline

# How often the Rust watcher looks for events. A change is handed over one step after the
# step that saw it, so a step is the latency it adds at most (half on average), and each
# look wakes the process: 100 looks a second cost 0.7% of a core on a 2-core VM.
IDLE_STEP_MS, FINE_STEP_MS = 10, 2
RING_WAIT_MS = 100  # after a ring, how long the Rust watcher may take to see the change
CHECK_S = 1.0  # a doorbell that stays silent: the Rust watcher is asked this often anyway
BUDGET_SHARE = 6  # a doorbell while the folders are at most this share of the watch limit
DOORBELL_EVENTS = (
    inotify_simple.flags.MODIFY
    | inotify_simple.flags.ATTRIB
    | inotify_simple.flags.CLOSE_WRITE
    | inotify_simple.flags.MOVED_FROM
    | inotify_simple.flags.MOVED_TO
    | inotify_simple.flags.CREATE
    | inotify_simple.flags.DELETE
    | inotify_simple.flags.DELETE_SELF
    | inotify_simple.flags.MOVE_SELF
)
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
        self._wake_r, self._wake_w = os.pipe()  # rings a doorbell's wait at `close`
        self._watched: list[str] = []  # the folders that could be watched
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
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        await asyncio.to_thread(self._thread.join, 5)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
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
            doorbell = None if self.poll else Doorbell.on(self._watched, self._wake_r)
            try:
                with notify:
                    self._deliver(READY)
                    wait = self._wait(notify, doorbell)
                    for item in batches(wait, self.watch_filter, self.quiet, self.cap):
                        self._deliver(item)
            except BaseException as exc:
                self._deliver(exc)
            finally:
                if doorbell is not None:
                    doorbell.close()
            return

    def _notify(self) -> RustNotify:
        """The Rust watcher, its watches in place. Every error adding a watch is raised,
        not swallowed (`ignore_permission_denied` would hide running out of inotify
        watches too), so folders gone or unreadable are left out first: their parent's
        watch reports them."""
        self._watched = [str(d) for d in self.dirs if os.access(d, os.R_OK | os.X_OK)]
        return RustNotify(self._watched, False, self.poll, POLL_DELAY_MS, False, False)

    def _wait(self, notify: RustNotify, doorbell: Doorbell | None) -> Wait:
        cap_ms = int(self.cap * 1000)
        # A change made after the Rust watcher's watches and before the doorbell's never
        # rings it: one look before the first sleep finds it.
        looked = False

        def wait(timeout: float | None) -> tuple[Changes, float] | None:
            nonlocal looked
            if timeout is not None:  # a batch waits: for what is left of its quiet period
                step, limit = FINE_STEP_MS, max(1, math.ceil(timeout * 1000))
            elif doorbell is None:  # idle, looking every step until something changes
                step, limit = IDLE_STEP_MS, 0
            elif not looked:
                step, limit, looked = FINE_STEP_MS, RING_WAIT_MS, True
            else:  # idle, asleep until the doorbell rings (or a while passed: a look anyway)
                rang = doorbell.wait(CHECK_S)
                if self._stop.is_set():
                    return None
                step, limit = FINE_STEP_MS, RING_WAIT_MS if rang else 1
            found = notify.watch(cap_ms, step, limit, self._stop)
            if found == "timeout":
                return set(), time.monotonic()
            if isinstance(found, str):  # "stop" (or "signal", which this thread never gets)
                return None
            # handed over once a step passed without a new one: it came that long ago, at least
            return found, time.monotonic() - step / 1000

        return wait


class Doorbell:
    """A second inotify instance on the watched folders, read only to wake the watcher up:
    while nothing happens, the watcher sleeps in the kernel instead of looking every step.

    It costs as many inotify watches again, and while the folders change two watchers
    overlap (the new one is set before the old one goes, so no change is lost). So there is
    a doorbell only while the folders are at most 1/BUDGET_SHARE of this user's inotify
    watches: the doorbell must never be why the watcher itself runs out and polls. Without
    one (`on` gives None: over that share, a limit, a folder gone) the watcher steps."""

    def __init__(self, inotify: inotify_simple.INotify, wake: int) -> None:
        self._inotify = inotify
        self._poll = select.poll()
        self._poll.register(inotify.fileno(), select.POLLIN)
        self._poll.register(wake, select.POLLIN)

    @classmethod
    def on(cls, dirs: list[str], wake: int) -> Doorbell | None:
        """A doorbell on `dirs` that `wake` (a pipe written at close) also rings."""
        budget = watch_budget()
        if len(dirs) * BUDGET_SHARE > budget:
            logger.debug("watching without a doorbell: {} folders, {} watches", len(dirs), budget)
            return None
        inotify = None
        try:
            inotify = inotify_simple.INotify(nonblocking=True)
            for folder in dirs:
                inotify.add_watch(folder, DOORBELL_EVENTS)
        except OSError as exc:
            if inotify is not None:
                inotify.close()  # its watches are given back at once
            logger.debug("watching without a doorbell ({}): a look every {} ms", exc, IDLE_STEP_MS)
            return None
        return cls(inotify, wake)

    def wait(self, timeout: float) -> bool:
        """Sleep until something changed in the folders (True), `wake` was written, or
        `timeout` seconds passed; what rang is read away."""
        rang = bool(self._poll.poll(timeout * 1000))
        if rang:
            with contextlib.suppress(OSError):
                self._inotify.read(timeout=0)
        return rang

    def close(self) -> None:
        self._inotify.close()


def watch_budget() -> int:
    """The inotify watches this user may hold: the lower of the sysctl and the limit of its
    user namespace (a container's may be lower)."""
    found = []
    for limit in ("/proc/sys/fs/inotify/max_user_watches", "/proc/sys/user/max_inotify_watches"):
        with contextlib.suppress(OSError, ValueError):
            found.append(int(Path(limit).read_text()))
    return min(found, default=8192)


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
