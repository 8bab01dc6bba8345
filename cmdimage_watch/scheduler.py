"""Deciding and running builds: one reconcile per image, in dependency order, within a limit.

A reconcile re-reads everything an image needs (cluster, ImageMaps, sources), compares the
inputs digest with the last good build's, and builds only when they differ. Results go into
`status.State`; `on_status` is told which images changed so their status files are written.
Knows no YAML and no Docker: `builder` does the work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from loguru import logger

from cmdimage_watch import models, project, sources, status
from cmdimage_watch.builder import Builder, BuildError, BuildRequest
from cmdimage_watch.graph import Image, Index, topological_order
from cmdimage_watch.settings import Settings
from cmdimage_watch.sources import Inputs


def utc_now() -> datetime:
    return datetime.now(UTC)


class Wait(Exception):
    """An image cannot build yet; str() is its `waiting.reason`."""


@dataclass
class Scheduler:
    index: Index
    builder: Builder
    settings: Settings
    state: status.State = field(default_factory=status.State)
    inputs: dict[str, Inputs] = field(default_factory=dict)  # of each last good build
    cache: sources.HashCache = field(default_factory=sources.HashCache)
    clock: Callable[[], datetime] = utc_now
    on_status: Callable[[list[str]], None] = lambda names: None

    async def run_once(self, names: Iterable[str] | None = None, force: bool = False) -> bool:
        """Build what is out of date among `names` (all by default) and what they need."""
        order = topological_order(self.index, self._with_deps(names))
        slots = asyncio.Semaphore(self.settings.max_parallel)
        tasks: dict[str, asyncio.Task[bool]] = {}
        for name in order:
            needs = [tasks[d] for d in self.index.deps(name) if d in tasks]
            tasks[name] = asyncio.create_task(self._after(needs, name, slots, force))
        results = await asyncio.gather(*tasks.values())
        return all(results) and len(results) == len(order)

    def _with_deps(self, names: Iterable[str] | None) -> set[str]:
        todo = list(self.index.images if names is None else names)
        found: set[str] = set()
        while todo:
            name = todo.pop()
            if name not in found and name in self.index.images:
                found.add(name)
                todo.extend(self.index.deps(name))
        return found

    async def _after(
        self, needs: list[asyncio.Task[bool]], name: str, slots: asyncio.Semaphore, force: bool
    ) -> bool:
        await asyncio.gather(*needs)
        return await self.reconcile(name, slots, force)

    async def reconcile(self, name: str, slots: asyncio.Semaphore, force: bool = False) -> bool:
        """Bring one image up to date; True when it is (built now or already)."""
        image = self.index.images[name]
        try:
            cluster = self._cluster(image)
            maps = self._resolve_maps(image)
        except Wait as wait:
            self._set(name, status.waiting(str(wait)))
            return False
        hashes = await asyncio.to_thread(sources.hash_sources, image, self.index, self.cache)
        new = Inputs.of(
            image, [(n, s.image_from_local or s.image) for n, s in maps], cluster, hashes
        )
        if not force and await self._up_to_date(image, cluster, new):
            return True
        reason = "manual trigger" if force else self._reason(name, new)
        async with slots:
            return await self._build(image, cluster, maps, new, reason)

    def _cluster(self, image: Image) -> models.Cluster | None:
        blocked = self.index.blocked(image.name)
        if blocked:
            raise Wait(blocked)
        cluster = self.index.cluster(image)
        if cluster is None and image.cluster != "default":
            raise Wait(f"waiting for cluster {image.cluster}: no Cluster object has that name")
        return cluster

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

    async def _up_to_date(self, image: Image, cluster: models.Cluster | None, new: Inputs) -> bool:
        if new.digest() != self.state.digests.get(image.name):
            return False
        old = self.state.images.get(image.name)
        published = self.state.image_maps.get(image.publishes)
        if old is None or old.building is not None or published is None:
            return False  # a build left `building` by a crash counts as not built
        ref = published.image_from_local
        if image.output_mode != "remote" and not await self.builder.exists(cluster, ref):
            return False
        done = old.completed
        started = done.started_at if done else self.clock()
        finished = done.finished_at if done else started
        self._set(image.name, status.succeeded(ref, "up to date", started, finished))
        return True

    def _reason(self, name: str, new: Inputs) -> str:
        if name not in self.state.digests:
            return "initial build"
        old = self.inputs.get(name)
        return (sources.change_reason(old, new) if old else "") or "inputs changed"

    async def _build(
        self,
        image: Image,
        cluster: models.Cluster | None,
        maps: list[tuple[str, models.ImageMapStatus]],
        new: Inputs,
        reason: str,
    ) -> bool:
        started = self.clock()
        self._set(image.name, status.building(reason, started))
        logger.info("building {}: {}", image.name, reason)
        try:
            result = await self.builder.build(BuildRequest(image, cluster, maps, started))
        except (BuildError, OSError) as exc:
            logger.error("{} failed: {}", image.name, exc)
            self._set(image.name, status.failed(str(exc), reason, started, self.clock()))
            return False
        local, remote = result.local_ref.familiar(), result.cluster_ref.familiar()
        self.state.digests[image.name] = new.digest()
        self.inputs[image.name] = new
        self.state.image_maps[image.publishes] = status.published(local, remote, started)
        self._save_inputs(image.name, new)
        self._set(image.name, status.succeeded(local, reason, started, self.clock()))
        logger.info("{} built: {}", image.name, local)
        return True

    def _save_inputs(self, name: str, new: Inputs) -> None:
        try:
            project.write_inputs(self.settings.state_dir, name, new)
        except OSError as exc:
            logger.error("could not record the inputs of {}: {}", name, exc)

    def _set(self, name: str, value: models.CmdImageStatus) -> None:
        self.state.images[name] = value
        self.on_status([name])


def status_writer(index: Index, state: status.State) -> Callable[[list[str]], None]:
    """An `on_status` that rewrites the status files showing the named images."""

    def write(names: list[str]) -> None:
        paths: set[Path] = project.files_showing(index, names)
        for path in sorted(paths):
            project.write_status(index, state, path)

    return write
