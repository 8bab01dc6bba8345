"""The content hashes of images' sources, read as cheaply as the moment allows.

Wraps the `sources.HashCache` (size and mtime decide whether a file is read again): a
known image with few sources is hashed right on the loop, a big or unknown one in a
thread, and a start-up hashes every image in one trip to a thread (`prewarm`), each
image's hashes then used once by its first plan. Owned by `reconcile`; `dispatch` and
`triggers` say when prewarmed hashes are stale; `daemon` and `cli` load and save the cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from loguru import logger

from cmdimage_watch import sources
from cmdimage_watch.graph import Image, Index

INLINE_MAX_FILES = 200  # sources of a known image hashed without a thread hop


@dataclass
class Hashes:
    cache: sources.HashCache = field(default_factory=sources.HashCache)
    file_counts: dict[str, int] = field(default_factory=dict)  # sources seen, by image
    prewarmed: dict[str, dict[str, str]] = field(default_factory=dict)  # hashes, used once

    async def of(self, image: Image, index: Index) -> dict[str, str]:
        """Source hashes: in a thread for a big or unknown source tree, else right here, as
        a thread hop costs more than stat-ing a few files whose hashes are cached."""
        found = self.prewarmed.pop(image.name, None)
        if found is not None:
            return found
        count, reads = self.file_counts.get(image.name), self.cache.reads
        if count is None or count > INLINE_MAX_FILES:
            found = await asyncio.to_thread(sources.hash_sources, image, index, self.cache)
        else:
            found = sources.hash_sources(image, index, self.cache)
        self.file_counts[image.name] = len(found)
        logger.debug("evaluated {}: {} file(s) read", image.name, self.cache.reads - reads)
        return found

    async def prewarm(self, names: Iterable[str], index: Index) -> None:
        """Hash the sources of many images in one trip to a thread (a start-up's work); the
        next plan of each uses these hashes unless `drop` says a change came."""
        images = [index.images[n] for n in names if n in index.images]

        def hash_all() -> None:
            for image in images:
                found = sources.hash_sources(image, index, self.cache)
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

    def drop(self, names: Iterable[str]) -> None:
        """These images changed: their prewarmed hashes are stale."""
        for name in names:
            self.prewarmed.pop(name, None)

    def forget(self, name: str) -> None:
        self.file_counts.pop(name, None)
        self.prewarmed.pop(name, None)
