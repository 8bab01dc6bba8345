"""One image's reconcile: re-read what it needs, decide whether to build, build, record.

Level-triggered, as Tilt's controllers are: it is told only a name and re-reads the index,
the ImageMaps and the sources. `plan` returns what is to be done as a value (a `Plan`, or
why not: `UpToDate`, `Waiting`, `Deferred`, `FailedBefore`); `build` runs a plan. The
inputs digest against the last good build's decides; results go into the `Ledger` and
`on_status` hears which image changed. `scheduler` calls it; `builder` does the work.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from loguru import logger

from cmdimage_watch import gating, models, project, sources, status, timeline
from cmdimage_watch.buildenv import EngineUnreachable
from cmdimage_watch.builder import Builder, BuildError, BuildRequest, BuildResult
from cmdimage_watch.gating import Maps, Waiting
from cmdimage_watch.graph import Image, Index
from cmdimage_watch.hashes import Hashes
from cmdimage_watch.ledger import Ledger
from cmdimage_watch.settings import Settings
from cmdimage_watch.sources import Inputs


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Plan:
    """A build that reconcile decided on, with everything it was decided from."""

    image: Image
    cluster: models.Cluster | None
    maps: Maps
    inputs: Inputs
    reason: str
    reuse: bool = True  # may come from the registry cache (not when triggered by hand)


@dataclass(frozen=True)
class UpToDate:
    """The last good build stands (its status says "up to date", once per run)."""

    name: str


@dataclass(frozen=True)
class Deferred:
    """Its spec file is gone (moved, deleted, being saved): the next batch says which."""

    name: str


@dataclass(frozen=True)
class FailedBefore:
    """Its last build in this run failed with these very inputs: it waits for a change or
    a trigger."""

    name: str


Outcome = Plan | UpToDate | Waiting | Deferred | FailedBefore


@dataclass(frozen=True)
class _Read:
    """What an image's inputs were read from."""

    cluster: models.Cluster | None
    maps: Maps
    inputs: Inputs


@dataclass
class Reconciler:
    index: Index
    builder: Builder
    settings: Settings
    ledger: Ledger = field(default_factory=Ledger)
    hashes: Hashes = field(default_factory=Hashes)
    clock: Callable[[], datetime] = utc_now
    on_status: Callable[[list[str]], None] = lambda names: None

    @property
    def state(self) -> status.State:
        return self.ledger.state

    @property
    def deferred(self) -> dict[str, bool]:
        return self.ledger.deferred

    async def plan(self, name: str, force: bool = False) -> Outcome:
        """What `name` needs now: a build, or why none."""
        image = self.index.images[name]
        read = await self._read(image)
        if isinstance(read, Waiting):
            self._set(name, status.waiting(read.reason))
            return read
        if not image.loc.path.exists():  # moved, deleted or being saved: the next batch says
            logger.debug("{}: its spec file {} is gone; not building", name, image.loc.path)
            self.ledger.defer(name, force)
            return Deferred(name)
        self.ledger.deferred.pop(name, None)
        given = self.ledger.reasons.pop(name, None)  # an engine back, a git operation
        if force:
            return Plan(image, read.cluster, read.maps, read.inputs, "manual trigger", False)
        refused = self.ledger.refusal(name, read.inputs.digest())
        if refused is not None:  # back to the inputs that failed (a cancelled build between)
            if self.state.images.get(name) != refused.shown:
                self._set(name, refused.shown)
            return FailedBefore(name)
        try:
            reason = await self._why_stale(image, read.cluster, read.inputs)
        except EngineUnreachable as exc:  # whether its image is still there, no one knows
            return self._engine_unreachable(name, exc)
        if reason is None:
            return UpToDate(name)
        timeline.mark("planned", name)
        return Plan(image, read.cluster, read.maps, read.inputs, given or reason)

    def _engine_unreachable(self, name: str, exc: EngineUnreachable) -> Waiting:
        """Its inputs are those of its last good build, but the engine that should hold
        that image does not answer: keep the ref and the ImageMap, build nothing on a guess
        (it would fail), and wait for the next change or trigger."""
        reason = f"engine at {exc.address} is not reachable"
        self.ledger.unreachable[name] = exc.address  # tried again once it answers
        old = self.state.images.get(name)
        kept = old.ref if old is not None else ""
        self._set(name, status.waiting(reason).model_copy(update={"ref": kept}))
        logger.warning("{}: {}; keeping {} published, not building", name, exc, kept or "it")
        return Waiting(name, reason)

    async def inputs_of(self, name: str) -> Inputs | None:
        """The inputs `name` would build with now; None while it has to wait."""
        image = self.index.images.get(name)
        if image is None:
            return None
        read = await self._read(image)
        return None if isinstance(read, Waiting) else read.inputs

    async def _read(self, image: Image) -> _Read | Waiting:
        found = gating.resolve(image, self.index, self.state)
        if isinstance(found, Waiting):
            return found
        hashes = await self.hashes.of(image, self.index)
        pairs = [(n, s.image_from_local or s.image) for n, s in found.maps]
        inputs = Inputs.of(image, pairs, found.cluster, hashes)
        return _Read(found.cluster, found.maps, inputs)

    async def _why_stale(
        self, image: Image, cluster: models.Cluster | None, new: Inputs
    ) -> str | None:
        """Why `image` must be built now, or None when its last good build still stands
        (then its status says "up to date", once per run)."""
        last = self.ledger.good_digest(image.name)
        if last is None:
            return "initial build"
        if new.digest() != last:
            old = self.ledger.good_inputs.get(image.name)
            return (sources.change_reason(old, new) if old else "") or "inputs changed"
        old_status = self.state.images.get(image.name)
        published = self.state.image_maps.get(image.publishes)
        if old_status is not None and old_status.building is not None:
            return "the last build did not finish"  # a crash left `building`
        if old_status is None or published is None:
            return "no status of the last build"  # its status file was lost or hand-edited
        ref = published.image_from_local
        if image.output_mode != "remote" and not await self.builder.exists(image, cluster, ref):
            return f"{ref} is no longer in the engine"
        self._confirm(image.name, ref, old_status)
        return None

    def _confirm(self, name: str, ref: str, old: models.CmdImageStatus) -> None:
        done = old.completed
        if name in self.ledger.confirmed and done and not done.error and old.ref == ref:
            return  # this run built or confirmed it already: keep its reason and times
        self.ledger.confirmed.add(name)
        started = done.started_at if done else self.clock()
        finished = done.finished_at if done else started
        self._set(name, status.succeeded(ref, "up to date", started, finished))

    async def build(self, plan: Plan, cancel_reason: str) -> bool:
        """Run the planned build; True when it succeeded. A cancelled build shows the
        message of its cancellation (`Task.cancel(msg)`), else `cancel_reason`."""
        image, started = plan.image, self.clock()
        self.hashes.prewarmed.clear()  # a build may write others' sources: hash afresh
        self._set(image.name, status.building(plan.reason, started))
        timeline.mark("status", image.name)
        logger.info("building {}: {}", image.name, plan.reason)
        key = self._cache_key(plan)
        request = BuildRequest(image, plan.cluster, plan.maps, started, key, plan.reuse)
        try:
            result = await self.builder.build(request)
        except (BuildError, OSError) as exc:
            logger.error("{} failed: {}", image.name, exc)
            self._fail(plan, str(exc), started)
            if isinstance(exc, EngineUnreachable):  # not its own fault: tried again
                self.ledger.unreachable[image.name] = exc.address
            return False
        except asyncio.CancelledError as exc:
            if image.name in self.index.images:  # not when its spec is gone: forgotten
                error = _message(exc) or cancel_reason
                self._set(image.name, status.cancelled(error, plan.reason, started, self.clock()))
            raise
        except Exception as exc:  # a bug of ours: the image says so, the daemon goes on
            logger.exception("{}: unexpected error in the build", image.name)
            self._fail(plan, f"internal error in cmdimage-watch: {exc!r}", started)
            return False
        done = "built"
        if result.reused:
            reason = f"reused from registry (inputs {plan.inputs.digest()[:23]})"
            plan, done = dataclasses.replace(plan, reason=reason), "reused from the registry"
        local, remote = result.local_ref.familiar(), result.cluster_ref.familiar()
        self._record(plan, local, remote, started, done)
        if key and not result.reused:
            await self._share(plan, request, result)
        return True

    async def _share(self, plan: Plan, request: BuildRequest, result: BuildResult) -> None:
        """Share the build under its inputs digest, unless its sources changed while the
        command read them: the image would not be the build of those inputs."""
        now = await self.inputs_of(plan.image.name)
        if now is None or now.digest() != plan.inputs.digest():
            logger.info("{}: its inputs changed during the build; not shared", plan.image.name)
            return
        await self.builder.share(request, result)

    def _cache_key(self, plan: Plan) -> str:
        """The first 16 hex of the inputs digest when the registry cache is on for this
        build (`--registry-cache`, or its Cluster's annotation); "" when it is off."""
        on = self.settings.registry_cache or (plan.cluster and plan.cluster.registry_cache)
        if not on:
            return ""
        return plan.inputs.digest().removeprefix("sha256:")[:16]

    def _record(
        self, plan: Plan, local: str, remote: str, started: datetime, done: str = "built"
    ) -> None:
        name = plan.image.name
        published = status.published(local, remote, started)
        self.ledger.succeeded(name, plan.inputs, plan.image.publishes, published)
        try:
            project.write_inputs(self.settings.state_dir, name, plan.inputs)
        except OSError as exc:
            logger.error("could not record the inputs of {}: {}", name, exc)
        self._set(name, status.succeeded(local, plan.reason, started, self.clock()))
        logger.info("{} {}: {}", name, done, local)

    def _fail(self, plan: Plan, error: str, started: datetime) -> None:
        name = plan.image.name
        shown = status.failed(error, plan.reason, started, self.clock())
        self.ledger.failed(name, plan.inputs.digest(), shown)
        self._set(name, shown)

    def forget(self, name: str, publishes: str) -> None:
        """Drop what is known of an image whose spec is gone."""
        self.ledger.forget(name, publishes)
        self.hashes.forget(name)

    def _set(self, name: str, value: models.CmdImageStatus) -> None:
        self.state.images[name] = value
        self.on_status([name])


def _message(exc: asyncio.CancelledError) -> str:
    return exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
