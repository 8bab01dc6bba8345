"""One image's reconcile: re-read what it needs, decide whether to build, build, record.

Level-triggered, as Tilt's controllers are: it is told only a name and re-reads the index,
the ImageMaps and the sources. The inputs digest against the last good build's decides;
results go into `status.State` and `on_status` hears which image changed. `scheduler`
decides when to call it; `builder` does the work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from loguru import logger

from cmdimage_watch import models, project, sources, status
from cmdimage_watch.builder import Builder, BuildError, BuildRequest
from cmdimage_watch.graph import Image, Index
from cmdimage_watch.settings import Settings
from cmdimage_watch.sources import Inputs


def utc_now() -> datetime:
    return datetime.now(UTC)


INLINE_MAX_FILES = 200  # sources of a known image hashed without a thread hop


class Wait(Exception):
    """An image cannot build yet; str() is its `waiting.reason`."""


@dataclass(frozen=True)
class Plan:
    """A build that reconcile decided on, with everything it was decided from."""

    image: Image
    cluster: models.Cluster | None
    maps: list[tuple[str, models.ImageMapStatus]]
    inputs: Inputs
    reason: str


@dataclass
class Reconciler:
    index: Index
    builder: Builder
    settings: Settings
    state: status.State = field(default_factory=status.State)
    inputs: dict[str, Inputs] = field(default_factory=dict)  # of each last good build
    failed: dict[str, str] = field(default_factory=dict)  # digest of a failed attempt
    failures: dict[str, models.CmdImageStatus] = field(default_factory=dict)  # what it showed
    cache: sources.HashCache = field(default_factory=sources.HashCache)
    clock: Callable[[], datetime] = utc_now
    on_status: Callable[[list[str]], None] = lambda names: None
    cancel_reason: str = "build cancelled: its inputs changed while it ran"
    current: set[str] = field(default_factory=set)  # built or confirmed by this process
    file_counts: dict[str, int] = field(default_factory=dict)  # sources seen, by image
    prewarmed: dict[str, dict[str, str]] = field(default_factory=dict)  # hashes, used once
    deferred: dict[str, bool] = field(default_factory=dict)  # spec file was gone: name -> force

    async def plan(self, name: str, force: bool = False) -> Plan | None:
        """The build `name` needs now, or None (up to date, waiting, or failed as is)."""
        image = self.index.images[name]
        try:
            cluster, maps, inputs = await self._read(image)
        except Wait as wait:
            self._set(name, status.waiting(str(wait)))
            return None
        if not image.loc.path.exists():  # moved, deleted or being saved: the next batch says
            logger.debug("{}: its spec file {} is gone; not building", name, image.loc.path)
            self.deferred[name] = force or self.deferred.get(name, False)
            return None
        self.deferred.pop(name, None)
        digest = inputs.digest()
        if not force and self.failed.get(name) == digest:
            shown = self.failures.get(name)  # back to the inputs that failed (a cancelled
            if shown is not None and self.state.images.get(name) != shown:  # build between)
                self._set(name, shown)
            return None  # failed with these very inputs: wait for a change or a trigger
        if force:
            return Plan(image, cluster, maps, inputs, "manual trigger")
        reason = await self._why_stale(image, cluster, inputs)
        return Plan(image, cluster, maps, inputs, reason) if reason else None

    async def inputs_of(self, name: str) -> Inputs | None:
        """The inputs `name` would build with now; None while it has to wait."""
        image = self.index.images.get(name)
        if image is None:
            return None
        try:
            return (await self._read(image))[2]
        except Wait:
            return None

    async def _read(
        self, image: Image
    ) -> tuple[models.Cluster | None, list[tuple[str, models.ImageMapStatus]], Inputs]:
        cluster = self._cluster(image)
        maps = self._resolve_maps(image)
        hashes = await self._hash(image)
        pairs = [(n, s.image_from_local or s.image) for n, s in maps]
        return cluster, maps, Inputs.of(image, pairs, cluster, hashes)

    async def _hash(self, image: Image) -> dict[str, str]:
        """Source hashes: in a thread for a big or unknown source tree, else right here, as
        a thread hop costs more than stat-ing a few files whose hashes are cached."""
        found = self.prewarmed.pop(image.name, None)
        if found is not None:
            return found
        count, reads = self.file_counts.get(image.name), self.cache.reads
        if count is None or count > INLINE_MAX_FILES:
            found = await asyncio.to_thread(sources.hash_sources, image, self.index, self.cache)
        else:
            found = sources.hash_sources(image, self.index, self.cache)
        self.file_counts[image.name] = len(found)
        logger.debug("evaluated {}: {} file(s) read", image.name, self.cache.reads - reads)
        return found

    async def prewarm(self, names: Iterable[str]) -> None:
        """Hash the sources of many images in one trip to a thread (a start-up's work); the
        next plan of each uses these hashes unless `drop_prewarmed` says a change came."""
        images = [self.index.images[n] for n in names if n in self.index.images]

        def hash_all() -> None:
            for image in images:
                found = sources.hash_sources(image, self.index, self.cache)
                self.file_counts[image.name] = len(found)
                self.prewarmed[image.name] = found

        reads = self.cache.reads
        await asyncio.to_thread(hash_all)
        files = sum(self.file_counts.get(i.name, 0) for i in images)
        logger.debug(
            "hashed {} source file(s) of {} image(s): {} read",
            files,
            len(images),
            self.cache.reads - reads,
        )

    def drop_prewarmed(self, names: Iterable[str]) -> None:
        for name in names:
            self.prewarmed.pop(name, None)

    def _cluster(self, image: Image) -> models.Cluster | None:
        blocked = self.index.blocked(image.name)
        if blocked:
            raise Wait(blocked)
        problem = self.index.cluster_problem(image)
        if problem:
            raise Wait(problem)
        return self.index.cluster(image)

    def _resolve_maps(self, image: Image) -> list[tuple[str, models.ImageMapStatus]]:
        resolved = []
        for map_name in image.spec.image_maps:
            found = status.image_map_status(map_name, self.index, self.state)
            if found is not None:
                resolved.append((map_name, found))
            elif map_name in self.index.publishers or map_name in self.index.image_maps:
                raise Wait(f"waiting for image map {map_name}")
            else:
                raise Wait(self.index.unknown_map_reason(map_name))
        return resolved

    async def _why_stale(
        self, image: Image, cluster: models.Cluster | None, new: Inputs
    ) -> str | None:
        """Why `image` must be built now, or None when its last good build still stands
        (then its status says "up to date", once per run)."""
        last = self.state.digests.get(image.name)
        if last is None:
            return "initial build"
        if new.digest() != last:
            old = self.inputs.get(image.name)
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
        if name in self.current and done and not done.error and old.ref == ref:
            return  # this run built or confirmed it already: keep its reason and times
        self.current.add(name)
        started = done.started_at if done else self.clock()
        finished = done.finished_at if done else started
        self._set(name, status.succeeded(ref, "up to date", started, finished))

    async def build(self, plan: Plan) -> bool:
        """Run the planned build; True when it succeeded. Cancellation is left to the caller."""
        image, started = plan.image, self.clock()
        self.prewarmed.clear()  # a build may write others' sources: from now on, hash afresh
        self._set(image.name, status.building(plan.reason, started))
        logger.info("building {}: {}", image.name, plan.reason)
        request = BuildRequest(image, plan.cluster, plan.maps, started)
        try:
            result = await self.builder.build(request)
        except (BuildError, OSError) as exc:
            logger.error("{} failed: {}", image.name, exc)
            self._fail(plan, str(exc), started)
            return False
        except asyncio.CancelledError:
            if image.name in self.index.images:  # not when its spec is gone: forgotten
                error = self.cancel_reason
                self._set(image.name, status.failed(error, plan.reason, started, self.clock()))
            raise
        except Exception as exc:  # a bug of ours: the image says so, the daemon goes on
            logger.exception("{}: unexpected error in the build", image.name)
            self._fail(plan, f"internal error in cmdimage-watch: {exc!r}", started)
            return False
        self._record(plan, result.local_ref.familiar(), result.cluster_ref.familiar(), started)
        return True

    def _record(self, plan: Plan, local: str, remote: str, started: datetime) -> None:
        name = plan.image.name
        self.current.add(name)
        self.failed.pop(name, None)
        self.failures.pop(name, None)
        self.state.failed.pop(name, None)
        self.state.digests[name] = plan.inputs.digest()
        self.inputs[name] = plan.inputs
        self.state.image_maps[plan.image.publishes] = status.published(local, remote, started)
        try:
            project.write_inputs(self.settings.state_dir, name, plan.inputs)
        except OSError as exc:
            logger.error("could not record the inputs of {}: {}", name, exc)
        self._set(name, status.succeeded(local, plan.reason, started, self.clock()))
        logger.info("{} built: {}", name, local)

    def _fail(self, plan: Plan, error: str, started: datetime) -> None:
        name = plan.image.name
        self.failed[name] = self.state.failed[name] = plan.inputs.digest()
        self.failures[name] = status.failed(error, plan.reason, started, self.clock())
        self._set(name, self.failures[name])

    def forget(self, name: str, publishes: str) -> None:
        """Drop what is known of an image whose spec is gone."""
        tables = (self.state.images, self.state.digests, self.state.failed, self.inputs)
        mine = (self.failed, self.failures, self.file_counts, self.prewarmed, self.deferred)
        for table in (*tables, *mine):
            table.pop(name, None)
        self.current.discard(name)
        self.state.image_maps.pop(publishes, None)

    def _set(self, name: str, value: models.CmdImageStatus) -> None:
        self.state.images[name] = value
        self.on_status([name])
