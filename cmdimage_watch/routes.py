"""Which images a changed path touches, and which folders to watch for them.

Each image's source roots (`sources.roots`), indexed by folder, so a path finds its images
by its parents (a handful of look-ups) rather than by asking every image. Kept current by
`dispatch` as the index changes; `daemon` and `watchset` get the folders to watch from it.
"""

from __future__ import annotations

from pathlib import Path

from cmdimage_watch import sources
from cmdimage_watch.graph import Index


class Routes:
    def __init__(self, root: Path, trigger_dir: Path) -> None:
        self.root = root
        self.trigger_dir = trigger_dir
        self.roots: dict[str, list[sources.Root]] = {}
        self._at: dict[Path, list[tuple[str, sources.Root]]] = {}
        self.outside: list[Path] = []  # source roots outside the tree
        self.moved = False  # the folders with roots changed since `take_moved`

    def update(self, old: Index, new: Index) -> None:
        """The roots of the images of `new`; those whose sources are unchanged are kept."""
        self.roots = {
            name: self.roots[name]
            if name in self.roots and _sources_of(old, name) == _sources_of(new, name)
            else sources.roots(image, new)
            for name, image in new.images.items()
        }
        self._index()

    def reroot(self, names: set[str], index: Index) -> None:
        """Read these images' roots again (a `.dockerignore` of theirs changed): what the
        rules prune may have changed, so the folders to watch may too."""
        for name in names:
            self.roots[name] = sources.roots(index.images[name], index)
        if names:
            self._index()
            self.moved = True

    def take_moved(self) -> bool:
        moved, self.moved = self.moved, False
        return moved

    def images_touched(self, path: Path) -> set[str]:
        return {
            name
            for folder in (path, *path.parents)
            for name, root in self._at.get(folder, ())
            if root.covers(path)
        }

    def watch_dirs(self, spec_files: set[Path]) -> set[Path]:
        """Every folder to watch: the tree's, pruned where all sources ignore it, plus the
        source folders outside the tree and the trigger folder."""
        self.trigger_dir.mkdir(parents=True, exist_ok=True)
        all_roots = [r for roots in self.roots.values() for r in roots]
        keep = {p.parent for p in spec_files}
        found = {self.trigger_dir, *sources.watched_folders(self.root, all_roots, keep)}
        for root in all_roots:
            if root.path == self.root or self.root in root.path.parents:
                continue  # the tree's own walk covers it
            if root.path.is_dir():
                found.update(sources.watched_folders(root.path, all_roots, keep))
            elif root.path.parent.is_dir():
                found.add(root.path.parent)
        return found

    def outside_came(self, watched: set[Path]) -> bool:
        """A source folder outside the tree that did not exist when last looked for: no
        watch can tell of it, so each batch (a spec save, say) looks."""
        return any(p not in watched and p.is_dir() for p in self.outside)

    def _index(self) -> None:
        before = set(self._at)
        self._at = {}
        for name, roots in self.roots.items():
            for root in roots:
                self._at.setdefault(root.path, []).append((name, root))
        self.moved |= set(self._at) != before  # the folders to watch may change
        self.outside = [p for p in self._at if self.root != p and self.root not in p.parents]


def _sources_of(index: Index, name: str) -> object:
    image = index.images.get(name)
    return image and (image.dir, index.file_watches.get(f"image:{image.publishes}"))
