"""Whether an image can build yet, and what it builds from: its Cluster and image maps.

Pure functions of the index and the state: a cycle, a missing or invalid Cluster, or an
image map that resolves to nothing makes the image wait (the value says for what);
otherwise the Cluster and the resolved image maps, in `spec.imageMaps` order. Called by
`reconcile` before it hashes the sources.
"""

from __future__ import annotations

from dataclasses import dataclass

from cmdimage_watch import models, status
from cmdimage_watch.graph import Image, Index

Maps = list[tuple[str, models.ImageMapStatus]]


@dataclass(frozen=True)
class Waiting:
    """It cannot build yet; `reason` is its `waiting.reason`."""

    name: str
    reason: str


@dataclass(frozen=True)
class Resolved:
    cluster: models.Cluster | None
    maps: Maps


def resolve(image: Image, index: Index, state: status.State) -> Resolved | Waiting:
    """What `image` builds from now, or why it waits."""
    blocked = index.blocked(image.name) or index.cluster_problem(image)
    if blocked:
        return Waiting(image.name, blocked)
    maps = []
    for name in image.spec.image_maps:
        found = status.image_map_status(name, index, state)
        if found is not None:
            maps.append((name, found))
        elif name in index.publishers or name in index.image_maps:
            return Waiting(image.name, f"waiting for image map {name}")
        else:
            return Waiting(image.name, index.unknown_map_reason(name))
    return Resolved(index.cluster(image), maps)
