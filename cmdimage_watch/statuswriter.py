"""Status files out, in the order things happened, without breaking a running build.

A status file usually sits in a build's own context (a spec file beside its Dockerfile).
`docker build` reads that folder while it runs, and a file replaced under it can fail the
build ("missed writing N bytes": the size it saw at lstat is not what it read). So most
status changes under the folder of an image that is building wait until that build is over.

Two writes never wait: an image's status when its build starts and when it ends. Users and
`wait` watch exactly those, and an image that is done must not show `building` until the
slowest build of its batch ends. The cost is a narrow race with another build reading the
same folder (a rename between its lstat and its open), twice per build, not on every change;
a `*.status.yaml` line in `.dockerignore` closes it. `reconcile` reports changes;
`publisher` (in the daemon) and `cli` flush.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Set
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cmdimage_watch import project, status
from cmdimage_watch.graph import Index
from cmdimage_watch.statusfiles import StatusCache, render_status, status_path

PARALLEL_FROM = 32  # files in one flush from which writing them takes several threads
WRITERS = 8


class StatusWriter:
    def __init__(
        self,
        index: Callable[[], Index],
        state: Callable[[], status.State],
        cache: StatusCache | None = None,
    ) -> None:
        self._index, self._state = index, state  # read anew: the daemon replaces both
        self.cache = cache or StatusCache()  # what the files hold: the same is not written again
        self._dirty: dict[Path, None] = {}  # in the order marked: no file runs ahead of its cause
        self._building: dict[str, Path] = {}  # image -> the folder its command reads
        self._failed: set[Path] = set()  # could not be written (disk full): tried at the next mark

    @property
    def pending(self) -> bool:
        return bool(self._dirty)

    def changed(self, names: list[str]) -> None:
        """These images' statuses changed: mark their files, and write at once the files of
        those whose build starts (their command is about to read that folder) or ends."""
        index, state = self._index(), self._state()
        starting, ending = [], []
        for name in names:
            value, image = state.images.get(name), index.images.get(name)
            if value is not None and value.building is not None and image is not None:
                starting.append(name)
            elif self._building.pop(name, None) is not None and image is not None:
                ending.append(name)
        ended = project.files_showing(index, ending)
        now = sorted(project.files_showing(index, starting) | ended)
        for path in now:
            self._dirty.pop(path, None)
        # `building` is replaced when the build ends: not worth an fsync before its command
        self._write(index, state, now, fleeting=set(now) - ended)
        self._building.update((name, index.images[name].dir) for name in starting)
        self.mark(project.files_showing(index, names) - set(now))

    def write(self, names: list[str]) -> None:
        """`changed`, then `flush`: for a one-shot run, which has no timer to coalesce."""
        self.changed(names)
        self.flush()

    def mark(self, paths: Iterable[Path]) -> None:
        failed, self._failed = self._failed, set()
        self._dirty.update(dict.fromkeys(sorted({*failed, *paths})))

    def flush(self) -> None:
        """Write what is marked, but for files under a building image's folder."""
        index, state = self._index(), self._state()
        self._building = {  # an image removed mid-build no longer holds its folder
            n: d for n, d in self._building.items() if (v := state.images.get(n)) and v.building
        }
        busy = list(self._building.values())
        dirty, self._dirty = self._dirty, {}
        todo = []
        for path in dirty:
            if _under(path, busy):
                self._dirty[path] = None  # after that build
            else:
                todo.append(path)
        self._write(index, state, todo)

    def write_all(self, root: Path) -> None:
        """Every spec file's status file, and no status file whose spec file is gone or not
        ours: at the end of a run, when no build holds a folder."""
        index = self._index()
        self._dirty = {}
        self._write(index, self._state(), list(index.files))
        project.remove_stale(index, root)

    def _write(
        self,
        index: Index,
        state: status.State,
        paths: list[Path],
        fleeting: Set[Path] = frozenset(),
    ) -> None:
        """Render here and write in order, but not what a file holds already; many files at
        once (a start-up's "up to date"s) are written on several threads, in no set order,
        as each waits for its fsync."""
        todo = []
        for path in paths:
            docs = project.status_documents(index, state, path)
            if docs is None or not self.cache.holds(status_path(path), docs):
                todo.append((path, docs))
        texts = [
            (path, None if docs is None else render_status(path, docs), path not in fleeting)
            for path, docs in todo
        ]
        if len(texts) < PARALLEL_FROM:
            done = [project.write_status_text(*args) for args in texts]
        else:
            with ThreadPoolExecutor(WRITERS, thread_name_prefix="status") as pool:
                done = list(pool.map(project.write_status_text, *zip(*texts, strict=True)))
        for (path, docs), (_, text, _), ok in zip(todo, texts, done, strict=True):
            if ok:
                self.cache.wrote(status_path(path), text, docs)
            else:
                self._failed.add(path)


def _under(path: Path, folders: list[Path]) -> bool:
    return any(folder == path.parent or folder in path.parents for folder in folders)
