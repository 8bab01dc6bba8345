"""The tree's spec files and the index built from them, kept current with keep-last-good.

`scan` reads every spec file once at start (through the `SpecCache`); `reload` re-reads
some of them, keeping the last good objects of a broken file, and returns a `Reload`
that says what changed: the images gone, the images whose spec or context changed, the
errors to report. Fed by `daemon` (start-up) and `dispatch` (batches).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cmdimage_watch import project, specfiles
from cmdimage_watch.graph import Index, build_index
from cmdimage_watch.speccache import SpecCache
from cmdimage_watch.specfiles import SpecFile


@dataclass(frozen=True)
class Reload:
    """What re-reading some spec files changed."""

    old: Index
    gone: set[str]  # images whose spec is gone
    changed: set[str]  # images that are new, or whose spec or context changed
    errors: list[tuple[Path, str]]  # (spec file, error) of each file or object that is broken


class SpecSet:
    def __init__(self, root: Path, cache_path: Path) -> None:
        self.root = root
        self.cache_path = cache_path
        self.files: dict[Path, SpecFile] = {}
        self.index = Index()
        self._scanned: dict[Path, tuple[int, int] | None] = {}  # spec files at the scan

    def scan(self) -> list[Path]:
        """Read every spec file of the tree; the status files found on the way."""
        cache = SpecCache(self.cache_path)
        specs, statuses = project.walk(self.root)
        for path in specs:
            self._scanned[path] = _stat(path)
            loaded = specfiles.load_spec_file(path, cache)
            if loaded.is_spec:
                self.files[path] = loaded
        cache.save()
        self.index = build_index(self.files.values())
        return statuses

    def changed_since_scan(self) -> set[Path]:
        """Spec files made, changed or removed since `scan` (before the watches were set)."""
        candidates = {*project.scan(self.root), *self._scanned}
        return {p for p in candidates if _stat(p) != self._scanned.get(p)}

    def touched(self, paths: set[Path]) -> set[Path]:
        """The spec files (known or new) among these changed paths."""
        return project.spec_files_touched(paths, self.files.keys(), self.root)

    def reload(self, paths: set[Path]) -> Reload:
        """Re-read these spec files (a missing one is deleted) and rebuild the index."""
        old, errors = self.index, []
        for path in paths:
            loaded = specfiles.load_spec_file(path) if path.exists() else SpecFile(path)
            if loaded.is_spec:
                self.files[path] = specfiles.keep_last_good(self.files.get(path), loaded)
                errors += [(path, error) for error in _errors(loaded)]
            else:
                self.files.pop(path, None)
        self.index = build_index(self.files.values())
        gone = set(old.images) - set(self.index.images)
        return Reload(old, gone, changed_images(old, self.index), errors)


def _errors(loaded: SpecFile) -> list[str]:
    return [loaded.error] if loaded.error else [e.error for e in loaded.entries if e.error]


def changed_images(old: Index, new: Index) -> set[str]:
    """Images that are new, or whose spec or anything it reads from the index changed;
    plus the images that depended on one that is gone."""
    changed = {name for name in new.images if _context(old, name) != _context(new, name)}
    gone = {old.images[n].publishes for n in set(old.images) - set(new.images)}
    changed |= {n for n, image in new.images.items() if gone & set(image.spec.image_maps)}
    return changed


def _context(index: Index, name: str) -> object:
    image = index.images.get(name)
    if image is None:
        return None
    maps = [(m, index.image_maps.get(m), index.publishers.get(m)) for m in image.spec.image_maps]
    watch = index.file_watches.get(f"image:{image.publishes}")
    frozen = index.frozen(name)
    return (image, index.cluster(image), maps, watch, frozen, index.blocked(name))


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns
