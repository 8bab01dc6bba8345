"""The object index: every object of the tree by kind and name, and who depends on whom.

Fed the loaded `SpecFile`s, it resolves each CmdImage's paths, ref and published ImageMap,
finds duplicates, unknown names and cycles (problems attached to the offending entries), and
gives the dependency order that `scheduler` builds in.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from cmdimage_watch import models, refs
from cmdimage_watch.specfiles import Entry, Loc, SpecFile


@dataclass(frozen=True)
class Image:
    """A valid CmdImage, with everything relative already resolved."""

    name: str
    spec: models.CmdImageSpec
    loc: Loc
    ref: refs.Ref
    publishes: str
    dir: Path
    outputs_ref_to: Path | None

    @property
    def cluster(self) -> str:
        return self.spec.cluster or "default"

    @property
    def output_mode(self) -> str:
        return self.spec.output_mode or "local-docker"


@dataclass
class Index:
    files: dict[Path, SpecFile] = field(default_factory=dict)
    images: dict[str, Image] = field(default_factory=dict)
    image_maps: dict[str, models.ImageMap] = field(default_factory=dict)
    image_map_locs: dict[str, Loc] = field(default_factory=dict)
    clusters: dict[str, models.Cluster] = field(default_factory=dict)
    invalid_clusters: dict[str, str] = field(default_factory=dict)  # name -> its error
    file_watches: dict[str, models.FileWatch] = field(default_factory=dict)
    file_watch_locs: dict[str, Loc] = field(default_factory=dict)
    publishers: dict[str, str] = field(default_factory=dict)  # image map -> CmdImage
    problems: dict[Loc, str] = field(default_factory=dict)  # entry -> why it is not usable
    kept: set[Loc] = field(default_factory=set)  # invalid now, last good object kept

    def blocked(self, name: str) -> str:
        """Why a CmdImage of the index must not build (a cycle), or ""."""
        return self.problems.get(self.images[name].loc, "")

    def problem(self, entry: Entry) -> str:
        return entry.error or self.problems.get(entry.loc, "")

    def frozen(self, name: str) -> bool:
        """Whether `name` is a last good object kept while its spec is broken: it stays
        published, and nothing of it rebuilds until the spec is fixed."""
        image = self.images[name]
        spec_file = self.files.get(image.loc.path)
        return spec_file is None or bool(spec_file.error) or image.loc in self.kept

    def deps(self, name: str) -> list[str]:
        """The CmdImages whose builds `name` needs, in `imageMaps` order."""
        maps = self.images[name].spec.image_maps
        return [self.publishers[m] for m in maps if m in self.publishers]

    def dependents(self, name: str) -> list[str]:
        """The CmdImages that need `name`'s build, by name."""
        return list(self._dependents.get(name, ()))

    def downstream(self, names: Iterable[str]) -> set[str]:
        """`names` and every CmdImage that needs one of them, transitively."""
        found, todo = set[str](), [n for n in names if n in self.images]
        while todo:
            name = todo.pop()
            if name not in found:
                found.add(name)
                todo.extend(self._dependents.get(name, ()))
        return found

    @cached_property
    def _dependents(self) -> dict[str, list[str]]:
        """Asked of a finished index only: build_index makes a new one for each change."""
        found: dict[str, list[str]] = {}
        for name in sorted(self.images):
            for dep in self.deps(name):
                found.setdefault(dep, []).append(name)
        return found

    def cluster(self, image: Image) -> models.Cluster | None:
        return self.clusters.get(image.cluster)

    def cluster_problem(self, image: Image) -> str:
        """Why `image` cannot build for its cluster (Tilt refuses these before any build),
        or "": the Cluster is missing or invalid, or its registry makes the ref invalid."""
        name = image.cluster
        if name in self.invalid_clusters:  # even with a last good one kept: nothing builds
            return f"waiting for cluster {name}: {self.invalid_clusters[name]}"
        cluster = self.clusters.get(name)
        if cluster is None:
            if name == "default":
                return ""
            return f"waiting for cluster {name}: no Cluster object has that name"
        misfit = self.registry_misfit(image)
        return f"waiting for cluster {name}: {misfit}" if misfit else ""

    def registry_misfit(self, image: Image) -> str:
        """Why the registry of `image`'s cluster makes no valid name of its ref (Tilt's
        NewRefSet), or ""."""
        cluster = self.clusters.get(image.cluster)
        try:
            refs.validate_ref_set(image.ref, cluster.registry if cluster else None)
        except refs.RefError as err:
            return f"spec.ref: {err}"
        return ""

    def unknown_map_reason(self, map_name: str) -> str:
        reason = f"waiting for image map {map_name}: no CmdImage publishes it and no ImageMap"
        reason += " declares it"
        guess = difflib.get_close_matches(map_name, [*self.publishers, *self.image_maps], 1)
        if not guess:
            return reason
        if guess[0] in self.publishers:
            image = self.images[self.publishers[guess[0]]]
            return (
                f"{reason}; did you mean {guess[0]} (published by CmdImage {image.name} in "
                f"{image.loc.path})?"
            )
        return f"{reason}; did you mean {guess[0]} (declared in {self.image_map_locs[guess[0]]})?"


def build_index(files: Iterable[SpecFile]) -> Index:
    index = Index()
    by_name: dict[tuple[str, str], list[Entry]] = {}
    for spec_file in files:
        index.files[spec_file.path] = spec_file
        for entry in spec_file.entries:
            by_name.setdefault((entry.kind, entry.name), []).append(entry)
    for (kind, name), entries in sorted(by_name.items()):
        if name and len(entries) > 1:
            _mark_duplicates(index, kind, name, entries)
        elif entries[0].obj is not None:
            _add(index, entries[0])
        elif kind == "Cluster" and name:
            index.invalid_clusters[name] = entries[0].error
    _mark_double_publishers(index)
    _mark_cycles(index)
    return index


def _mark_duplicates(index: Index, kind: str, name: str, entries: list[Entry]) -> None:
    for entry in entries:
        others = ", ".join(str(e.loc) for e in entries if e is not entry)
        index.problems[entry.loc] = (
            f"invalid spec: {entry.loc}: metadata.name: {kind} {name} is also defined in "
            f"{others}; names must be unique per kind"
        )


def _add(index: Index, entry: Entry) -> None:
    obj = entry.obj
    if entry.error:
        index.kept.add(entry.loc)
        if entry.kind == "Cluster":
            index.invalid_clusters[entry.name] = entry.error
    if isinstance(obj, models.CmdImage):
        index.images[entry.name] = _image(obj, entry.loc)
    elif isinstance(obj, models.ImageMap):
        index.image_maps[entry.name] = obj
        index.image_map_locs[entry.name] = entry.loc
    elif isinstance(obj, models.Cluster):
        index.clusters[entry.name] = obj
    elif isinstance(obj, models.FileWatch):
        index.file_watches[entry.name] = obj
        index.file_watch_locs[entry.name] = entry.loc


def _image(obj: models.CmdImage, loc: Loc) -> Image:
    folder = loc.path.parent
    spec = obj.spec
    ref = refs.parse_ref(spec.ref)
    out = _norm(folder / spec.outputs_image_ref_to) if spec.outputs_image_ref_to else None
    name = obj.metadata.name
    return Image(name, spec, loc, ref, refs.image_map_name(ref), _norm(folder / spec.dir), out)


def _norm(path: Path) -> Path:
    """`a/../b` as `b`, so that folder containment is a plain comparison of parts."""
    return Path(os.path.normpath(path))


def _mark_double_publishers(index: Index) -> None:
    by_map: dict[str, list[Image]] = {}
    for image in index.images.values():
        by_map.setdefault(image.publishes, []).append(image)
    for map_name, images in by_map.items():
        if len(images) == 1:
            index.publishers[map_name] = images[0].name
            continue
        for image in images:
            others = ", ".join(f"CmdImage {o.name} in {o.loc}" for o in images if o is not image)
            index.problems[image.loc] = (
                f"invalid spec: {image.loc}: spec.ref: publishes image map {map_name}, as does "
                f"{others}; give each image its own ref"
            )
            del index.images[image.name]


def _mark_cycles(index: Index) -> None:
    for members in find_cycles(index):
        text = " -> ".join(_shortest_cycle(index, members))
        others = [m for m in members if m not in text.split(" -> ")]
        also = f" (and through {', '.join(others)})" if others else ""
        for name in members:
            index.problems[index.images[name].loc] = (
                f"dependency cycle: {text}{also}; none of these builds"
            )


def find_cycles(index: Index) -> list[list[str]]:
    """The images on some dependency cycle, one sorted list per strongly connected group
    (Tarjan's algorithm, without recursion: chains can be long)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []
    for root in sorted(index.images):
        if root in order:
            continue
        order[root] = low[root] = len(order)
        stack.append(root)
        work = [(root, iter(index.deps(root)))]
        while work:
            node, deps = work[-1]
            for dep in deps:
                if dep not in order:
                    order[dep] = low[dep] = len(order)
                    stack.append(dep)
                    work.append((dep, iter(index.deps(dep))))
                    break
                if dep in stack:
                    low[node] = min(low[node], order[dep])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == order[node]:
                    group = stack[stack.index(node) :]
                    del stack[stack.index(node) :]
                    if len(group) > 1 or node in index.deps(node):
                        groups.append(sorted(group))
    return sorted(groups)


def _shortest_cycle(index: Index, members: list[str]) -> list[str]:
    """From the first member back to it, through the group, as few steps as there are."""
    start, inside = members[0], set(members)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for dep in index.deps(node):
                if dep == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if dep in inside and dep not in came_from:
                    came_from[dep] = node
                    following.append(dep)
        frontier = following
    return [start, start]


def topological_order(index: Index, names: Iterable[str]) -> list[str]:
    """`names` sorted so that every image comes after the images it needs."""
    wanted = set(names)
    order: list[str] = []
    seen: set[str] = set()
    for first in sorted(wanted):
        stack = [(first, False)]
        while stack:
            name, expanded = stack.pop()
            if expanded:
                if name in wanted:
                    order.append(name)
                continue
            if name in seen:
                continue
            seen.add(name)
            stack.append((name, True))
            stack.extend((dep, False) for dep in reversed(index.deps(name)) if dep not in seen)
    return order
