"""The watch set with its one seam faked: watchers are scripted streams of batches.

Each scripted watcher records the folders it was given and whether it polls; the test
feeds it READY, batches or an error, and sees what the set yields, which watcher it
starts next, and which it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from loguru import logger

from cmdimage_watch.watcher import READY
from cmdimage_watch.watchset import INSTANCES, WATCHES, Batch, Ready, WatchSet, inotify_limit
from tests.helpers import on_virtual_time


class Scripted:
    """A watcher whose batches (or error) the test puts in."""

    def __init__(self, dirs: set[Path], poll: bool) -> None:
        self.dirs, self.poll = set(dirs), poll
        self.closed = False
        self.queue: asyncio.Queue[frozenset[Path] | BaseException] = asyncio.Queue()
        self.stream = self._items()

    async def _items(self) -> AsyncIterator[frozenset[Path]]:
        while True:
            item = await self.queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    def put(self, *paths: str) -> None:
        self.queue.put_nowait(frozenset(Path(p) for p in paths) if paths else READY)

    async def close(self) -> None:
        self.closed = True

    def drain(self) -> set[Path]:
        left: set[Path] = set()
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if not isinstance(item, BaseException):
                left |= item
        return left


@contextlib.contextmanager
def capture_logs() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), format="{message}")
    try:
        yield lines
    finally:
        logger.remove(sink)


class Harness:
    def __init__(self, poll: bool = False) -> None:
        self.started: list[Scripted] = []
        self.dirs = {Path("/tree")}
        self.stop = asyncio.Event()
        self.set = WatchSet(self._factory, lambda: set(self.dirs), poll, self.stop)
        self.items = aiter(self.set)

    def _factory(self, dirs: set[Path], poll: bool) -> Scripted:
        self.started.append(Scripted(dirs, poll))
        return self.started[-1]

    async def next(self) -> Ready | Batch:
        return await asyncio.wait_for(anext(self.items), 1)


@on_virtual_time
async def test_ready_then_batches_come_through_as_they_are() -> None:
    h = Harness()
    first = asyncio.ensure_future(h.next())
    await asyncio.sleep(0.01)
    (watcher,) = h.started
    watcher.put()
    assert await first == Ready(poll=False)
    watcher.put("/tree/a", "/tree/b")
    assert await h.next() == Batch({Path("/tree/a"), Path("/tree/b")}, poll=False)
    h.stop.set()
    assert [item async for item in h.items] == []
    assert watcher.closed


@on_virtual_time
async def test_rewatch_keeps_the_old_watcher_until_the_new_one_is_ready() -> None:
    h = Harness()
    pending = asyncio.ensure_future(h.next())
    await asyncio.sleep(0.01)
    old = h.started[0]
    old.put()
    assert await pending == Ready(poll=False)
    old.put("/tree/new")
    assert await h.next() == Batch({Path("/tree/new")}, poll=False)
    h.dirs.add(Path("/tree/new"))
    h.set.rewatch()
    pending = asyncio.ensure_future(h.next())
    await asyncio.sleep(0.01)
    new = h.started[1]
    assert new.dirs == {Path("/tree"), Path("/tree/new")}
    assert h.set.take_new_dirs() == {Path("/tree/new")}
    old.put("/tree/x")  # the old one still reports while the new one sets its watches
    assert await pending == Batch({Path("/tree/x")}, poll=False)
    assert not old.closed
    new.put()
    assert await h.next() == Ready(poll=False)
    assert old.closed and not new.closed
    h.stop.set()
    assert [item async for item in h.items] == []


@on_virtual_time
async def test_out_of_inotify_watches_polls_from_then_on() -> None:
    h = Harness()
    pending = asyncio.ensure_future(h.next())
    await asyncio.sleep(0.01)
    h.started[0].queue.put_nowait(OSError(errno.ENOSPC, "inotify watch limit reached"))
    await asyncio.sleep(0.01)
    await asyncio.sleep(0.01)
    polling = h.started[1]
    assert polling.poll
    assert h.started[0].closed  # the failed watcher's pipe is not left open
    polling.put()
    assert await pending == Ready(poll=True)
    polling.put("/tree/a")
    assert await h.next() == Batch({Path("/tree/a")}, poll=True)
    h.stop.set()
    assert [item async for item in h.items] == []


@on_virtual_time
async def test_any_other_failure_of_a_watcher_is_raised() -> None:
    h = Harness()
    pending = asyncio.ensure_future(h.next())
    await asyncio.sleep(0.01)
    h.started[0].queue.put_nowait(OSError(errno.EACCES, "permission denied"))
    try:
        await pending
    except OSError as exc:
        assert exc.errno == errno.EACCES
    else:
        raise AssertionError("the failure was swallowed")
    assert h.started[0].closed


@on_virtual_time
async def test_a_ready_that_retires_a_watcher_with_a_batch_in_the_same_round() -> None:
    """The old watcher's batch and the new one's READY come together: the old one is
    closed by the READY, and its batch still comes through, before the Ready."""
    h = Harness()
    pending = asyncio.ensure_future(h.next())
    await asyncio.sleep(0.01)
    old = h.started[0]
    old.put()
    assert await pending == Ready(poll=False)
    old.put("/tree/new")
    assert await h.next() == Batch({Path("/tree/new")}, poll=False)
    h.set.rewatch()
    pending = asyncio.ensure_future(h.next())
    await asyncio.sleep(0.01)
    new = h.started[1]
    old.put("/tree/late")
    new.put()
    assert await pending == Batch({Path("/tree/late")}, poll=False)
    assert await h.next() == Ready(poll=False)
    assert old.closed and not new.closed
    h.stop.set()
    assert [item async for item in h.items] == []


@on_virtual_time
async def test_batches_an_old_watcher_still_holds_when_retired_come_through() -> None:
    """Two restarts in a row: the first new watcher is retired before its READY counts, and
    what it and the first one queued (folders made meanwhile, a save) is not dropped."""
    h = Harness()
    pending = asyncio.ensure_future(h.next())
    await asyncio.sleep(0.01)
    first = h.started[0]
    first.put()
    assert await pending == Ready(poll=False)
    first.put("/tree/h2")
    assert await h.next() == Batch({Path("/tree/h2")}, poll=False)
    h.set.rewatch()
    first.put("/tree/h3")
    assert await h.next() == Batch({Path("/tree/h3")}, poll=False)
    h.set.rewatch()  # before the second watcher's READY: it retires too
    second = h.started[1]
    first.put("/tree/h4")
    second.put()
    second.put("/tree/h5")
    second.put("/tree/good/src.txt")
    pending = asyncio.ensure_future(h.next())  # the set resumes: the third watcher starts
    await asyncio.sleep(0.01)
    third = h.started[2]
    third.put()
    seen: set[Path] = set()
    item = await pending
    while item != Ready(poll=False):
        assert isinstance(item, Batch)
        seen |= item.paths
        item = await h.next()
    assert seen == {Path("/tree/h4"), Path("/tree/h5"), Path("/tree/good/src.txt")}
    assert first.closed and second.closed and not third.closed
    h.stop.set()
    assert [item async for item in h.items] == []


@on_virtual_time
async def test_watchfiles_own_limit_errors_poll_and_name_the_sysctl() -> None:
    """What watchfiles really raises (issue 13 §2): the watch limit as an OSError with no
    errno and no "inotify"; no instance left as a RuntimeError."""
    errors = [
        OSError('OS file watch limit reached. about ["/t/d46"] (Error { kind: MaxFilesWatch })'),
        RuntimeError("Error creating recommended watcher: Too many open files (os error 24)"),
    ]
    for error, sysctl in zip(errors, [WATCHES, INSTANCES], strict=True):
        assert inotify_limit(error) == sysctl
        h = Harness()
        pending = asyncio.ensure_future(h.next())
        await asyncio.sleep(0.01)
        with capture_logs() as logs:
            h.started[0].queue.put_nowait(error)
            await asyncio.sleep(0.01)
            await asyncio.sleep(0.01)
        assert h.started[1].poll
        h.started[1].put()
        assert await pending == Ready(poll=True)
        assert any(sysctl in line and "polling" in line for line in logs)
        h.stop.set()
        assert [item async for item in h.items] == []


def test_other_errors_are_no_inotify_limit() -> None:
    assert inotify_limit(OSError(errno.EACCES, "permission denied")) is None
    assert inotify_limit(RuntimeError("something else")) is None
    assert inotify_limit(FileNotFoundError("No such file or directory (os error 2)")) is None
