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
from pathlib import Path

from loguru import logger

from cmdimage_watch import models, sources
from cmdimage_watch.graph import Index
from cmdimage_watch.reconcile import Plan, Reconciler
from cmdimage_watch.sources import Inputs

INPUTS_CHANGED = "build cancelled: its inputs changed while it ran"
STOPPED = "build cancelled: cmdimage-watch was stopped"
LOOP_AFTER = 3  # restarts in a row for the same files: the build writes its own inputs


@dataclass
class _Slot:
    """One image's worker and what it is doing."""

    dirty: bool = True
    force: bool = False
    worker: asyncio.Task[None] | None = None
    build: asyncio.Task[bool] | None = None
    building: Inputs | None = None
    spec: Path | None = None  # where the spec of the running build was
    done: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled_by: list[str] = field(default_factory=list)  # files that cancelled the build


class Scheduler:
    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler
        self.settings = reconciler.settings
        self._slots: dict[str, _Slot] = {}
        self._limit = asyncio.Semaphore(self.settings.max_parallel)
        self._checks: set[asyncio.Task[None]] = set()
        self.scope: set[str] | None = None  # a one-shot run builds these and no others
        self.closed = False  # after shutdown, nothing starts
        self._streaks: dict[str, tuple[frozenset[str], int]] = {}  # name -> files, restarts
        self.loops: dict[str, frozenset[str]] = {}  # files that no longer restart a build

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
        self._streaks.pop(name, None)
        self.loops.pop(name, None)
        slot.dirty = True  # a build about to start plans anew instead, and finds it gone
        if slot.build is not None:
            slot.build.cancel()

    async def _cancel_if_stale(self, name: str, slot: _Slot) -> None:
        building = slot.building
        new = await self.reconciler.inputs_of(name)
        build = slot.build
        if build is None or slot.building is not building or building is None:
            return  # that build is over already
        if build.cancelling():
            return  # already on its way out
        image = self.reconciler.index.images.get(name)
        moved = image is not None and image.loc.path != slot.spec  # the digest is relative
        if not moved and not slot.force and new is not None and new.digest() == building.digest():
            return
        files = [] if new is None else sources.changed_files(building, new)
        looping = self.loops.get(name, frozenset())
        only_files = new is not None and sources.only_files_differ(building, new)
        if not slot.force and only_files and files and set(files) <= looping:
            return  # a loop: this build finishes, and the next one sees the change
        what = sources.describe_files(files) if files else "spec or image maps changed"
        what = f"its spec file moved to {image.loc.path}" if moved and image else what
        logger.info(
            "{}: inputs changed during the build ({}); cancelling it to start again", name, what
        )
        slot.cancelled_by = files
        build.cancel()

    def _count_restart(self, name: str, files: list[str]) -> None:
        """A build cancelled by `files`: the same files LOOP_AFTER times in a row is a loop
        (the build writes into its own sources). Say which file and how to end it, and stop
        restarting for those files."""
        if not files:
            self._streaks.pop(name, None)
            return
        key = frozenset(files)
        last, count = self._streaks.get(name, (frozenset(), 0))
        count = count + 1 if key == last else 1
        self._streaks[name] = (key, count)
        if count < LOOP_AFTER or name in self.loops:
            return
        self.loops[name] = key
        index = self.reconciler.index
        image = index.images.get(name)
        if image is None:
            return
        for rel in sorted(key):
            logger.warning(
                "{}: {} changed during each of its last {} builds: the build seems to write"
                " it. Builds of {} now run to their end when only it changes. To stop it"
                " counting as a source, {}",
                name,
                rel,
                count,
                name,
                sources.ignore_rule(image, index, rel),
            )

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
            slot.building, slot.spec = plan.inputs, plan.image.loc.path
            build = self.reconciler.build(plan, INPUTS_CHANGED)
            slot.build = asyncio.create_task(build, name=f"build {name}")
            try:
                built = await slot.build
                self._streaks.pop(name, None)  # ran to its end: no loop
                return built
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # we are being stopped, not restarted
                slot.dirty = True
                self._count_restart(name, slot.cancelled_by)
                slot.cancelled_by = []
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
