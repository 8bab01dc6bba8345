"""When builds run: one worker per image, keyed by name, as kopf queues its handlers.

`request` marks an image dirty; requests for a busy image coalesce into one more pass.
A worker waits until the images it needs are idle, reconciles within `--max-parallel`,
cancels its running build when the inputs change under it (`--on-change restart`), and
exits when nothing is left to do. Knows no YAML and no Docker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from loguru import logger

from cmdimage_watch import models
from cmdimage_watch.graph import Index
from cmdimage_watch.reconcile import Plan, Reconciler
from cmdimage_watch.sources import Inputs

INPUTS_CHANGED = "build cancelled: its inputs changed while it ran"
STOPPED = "build cancelled: cmdimage-watch was stopped"


@dataclass
class _Slot:
    """One image's worker and what it is doing."""

    dirty: bool = True
    force: bool = False
    worker: asyncio.Task[None] | None = None
    build: asyncio.Task[bool] | None = None
    building: Inputs | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Scheduler:
    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler
        self.settings = reconciler.settings
        self._slots: dict[str, _Slot] = {}
        self._limit = asyncio.Semaphore(self.settings.max_parallel)
        self._checks: set[asyncio.Task[None]] = set()
        self.scope: set[str] | None = None  # a one-shot run builds these and no others
        self.closed = False  # after shutdown, nothing starts

    @property
    def busy(self) -> set[str]:
        return set(self._slots)

    def request(self, names: Iterable[str], force: bool = False) -> None:
        """Reconcile these images soon; a running build is checked against its new inputs."""
        for name in names:
            if self.closed or name not in self.reconciler.index.images:
                continue
            slot = self._slots.get(name)
            if slot is None:
                slot = self._slots[name] = _Slot()
                slot.worker = asyncio.create_task(self._work(name, slot), name=f"worker {name}")
            slot.dirty = True
            slot.force |= force
            if slot.build is not None and self.settings.on_change == "restart":
                check = asyncio.create_task(self._cancel_if_stale(name, slot))
                self._checks.add(check)
                check.add_done_callback(self._checks.discard)

    def cancel(self, name: str) -> None:
        """Stop whatever `name` is about to build or building (its spec is gone)."""
        slot = self._slots.get(name)
        if slot is None:
            return
        slot.dirty = True  # a build about to start plans anew instead, and finds it gone
        if slot.build is not None:
            slot.build.cancel()

    async def _cancel_if_stale(self, name: str, slot: _Slot) -> None:
        building = slot.building
        new = await self.reconciler.inputs_of(name)
        if slot.build is None or slot.building is not building or building is None:
            return  # that build is over already
        if slot.force or new is None or new.digest() != building.digest():
            logger.info("{}: inputs changed during the build; cancelling it to start again", name)
            slot.build.cancel()

    async def _work(self, name: str, slot: _Slot) -> None:
        try:
            while slot.dirty and name in self.reconciler.index.images:
                slot.dirty = False
                force, slot.force = slot.force, False
                await self._needs_idle(name)
                if await self._pass(name, slot, force):
                    dependents = self.reconciler.index.dependents(name)
                    self.request(d for d in dependents if self.scope is None or d in self.scope)
        finally:
            if self._slots.get(name) is slot:
                del self._slots[name]
            slot.done.set()

    async def _needs_idle(self, name: str) -> None:
        """Wait until no image that `name` needs, directly or not, is dirty or building (so
        it builds once, on the final bases). A blocked image (a cycle) waits for nothing."""
        index = self.reconciler.index
        while name in index.images and not index.blocked(name):
            needs = with_deps(index, [name]) - {name}
            busy = [self._slots[d] for d in sorted(needs) if d in self._slots]
            if not busy:
                return
            await busy[0].done.wait()
            index = self.reconciler.index

    async def _pass(self, name: str, slot: _Slot, force: bool) -> bool:
        """One reconcile; True when it built an image (so its dependents must look)."""
        if name not in self.reconciler.index.images or self.reconciler.index.frozen(name):
            return False  # gone, or its spec file is broken: keep the last good image
        plan = await self.reconciler.plan(name, force)
        if not isinstance(plan, Plan):
            return False  # up to date, waiting, put off, or failed with these inputs
        async with self._limit:
            if slot.dirty:  # changed again while queued: plan anew
                slot.force |= force
                return False
            slot.building = plan.inputs
            build = self.reconciler.build(plan, INPUTS_CHANGED)
            slot.build = asyncio.create_task(build, name=f"build {name}")
            try:
                return await slot.build
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # we are being stopped, not restarted
                slot.dirty = True
                return False
            finally:
                slot.build = None
                slot.building = None

    async def wait_idle(self, names: Iterable[str] | None = None) -> None:
        """Return once no worker is left (of `names`, or of any image): every requested
        image has been reconciled."""
        wanted = None if names is None else set(names)
        while busy := [s for n, s in self._slots.items() if wanted is None or n in wanted]:
            await busy[0].done.wait()

    async def shutdown(self, grace: float) -> int:
        """Cancel every worker and its build, waiting `grace` seconds at most; count builds."""
        self.closed = True
        workers = [s.worker for s in self._slots.values() if s.worker is not None]
        builds = sum(1 for s in self._slots.values() if s.build is not None)
        for task in [*workers, *self._checks]:
            task.cancel(STOPPED)  # the message reaches the build it awaits: its status says so
        if workers:
            _, pending = await asyncio.wait(workers, timeout=grace)
            if pending:
                logger.warning("{} workers did not stop within {:g} s", len(pending), grace)
        return builds


async def run_once(scheduler: Scheduler, names: Iterable[str] | None, force: bool = False) -> bool:
    """Reconcile `names` (all when None) and what they need, once; True when all are up to
    date. Only the named images are forced; what depends on them is left alone."""
    index = scheduler.reconciler.index
    named = set(index.images if names is None else names)
    wanted = with_deps(index, named)
    scheduler.scope = wanted
    await scheduler.reconciler.hashes.prewarm(wanted, index)
    scheduler.request(sorted(wanted - named))
    scheduler.request(sorted(named), force)
    await scheduler.wait_idle()
    return all(_ok(scheduler.reconciler.state.images.get(name)) for name in wanted)


def _ok(value: models.CmdImageStatus | None) -> bool:
    return value is not None and value.completed is not None and not value.completed.error


def with_deps(index: Index, names: Iterable[str]) -> set[str]:
    """`names` and every image they need, transitively."""
    todo = [n for n in names if n in index.images]
    found: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo.extend(index.deps(name))
    return found
