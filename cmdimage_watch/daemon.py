"""The long-running `watch`: lock, orphans, the first scan, the watchfiles loop, shutdown.

A batch of changed paths is turned into work: spec files are re-read (keeping the last good
objects of a broken one), the index is rebuilt, and the images whose spec, context or
sources a path touches are handed to the `scheduler`. Status files are written from here.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

from loguru import logger

from cmdimage_watch import models, project, sources, specfiles, status, views
from cmdimage_watch.builder import Builder
from cmdimage_watch.graph import Index, build_index
from cmdimage_watch.ledger import Ledger
from cmdimage_watch.lifecycle import BuildRecords, LockedError, StateLock
from cmdimage_watch.reconcile import Reconciler
from cmdimage_watch.scheduler import Scheduler
from cmdimage_watch.settings import Settings
from cmdimage_watch.speccache import SpecCache
from cmdimage_watch.specfiles import SpecFile
from cmdimage_watch.statuswriter import StatusWriter
from cmdimage_watch.triggers import Triggers
from cmdimage_watch.watcher import READY, Watcher

POLL_RECHECK_S = 1.1


STATUS_DELAY_S = 0.01  # status changes this close together are one write of the file


class Daemon:
    def __init__(self, settings: Settings, builder: Builder) -> None:
        self.settings = settings
        self.root = settings.root
        self.files: dict[Path, SpecFile] = {}
        self.index = Index()
        self.records = BuildRecords(settings.state_dir / "builds")
        builder.on_spawn = self.records.update
        self.reconciler = Reconciler(self.index, builder, settings)
        self.reconciler.on_status = self._write_statuses
        self.scheduler = Scheduler(self.reconciler)
        self.triggers = Triggers(settings.state_dir / "triggers", self.scheduler, self._spawn)
        self.roots: dict[str, list[sources.Root]] = {}
        self.roots_at: dict[Path, list[tuple[str, sources.Root]]] = {}
        self._roots_moved = False
        self._outside: list[Path] = []  # source roots outside the tree
        self.watched: set[Path] = set()
        self._new_dirs: set[Path] = set()  # watched since the last restart of the watcher
        self._loaded: dict[Path, tuple[int, int] | None] = {}  # spec files at the first scan
        self.writer = StatusWriter(lambda: self.index, lambda: self.reconciler.state)
        self._flush_at: asyncio.TimerHandle | None = None
        self.stop = asyncio.Event()
        self.ready = asyncio.Event()  # set once the first scan is done and builds requested
        self.started = time.monotonic()
        self.on_event: Callable[[dict[str, Any]], None] = lambda event: None
        self._shown: dict[str, models.CmdImageStatus] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock_lost = False  # another daemon took the tree after its state folder went

    async def run(self) -> None:
        with StateLock(self.settings.state_dir, self.root) as self._lock:
            self.records.end_orphans(self.settings.stop_timeout)
            self._install_signal_handlers()
            await self._start()
            try:
                await self._watch_loop()
            finally:
                cancelled = await self.scheduler.shutdown(self.settings.stop_timeout + 5)
                if cancelled:
                    logger.info("stopped; cancelled {} running build(s)", cancelled)
                if not self._lock_lost:  # else the tree is another daemon's now
                    project.write_all(self.index, self.reconciler.state, self.root)
                    project.write_hashes(self.settings.state_dir, self.reconciler.cache)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)

    async def _start(self) -> None:
        cache = SpecCache(self.settings.state_dir / "specs.json")
        specs, statuses = project.walk(self.root)
        for path in specs:
            self._loaded[path] = _stat(path)
            loaded = specfiles.load_spec_file(path, cache)
            if loaded.is_spec:
                self.files[path] = loaded
        cache.save()
        self._set_index(build_index(self.files.values()))
        state, inputs = project.read_state(self.index, self.settings.state_dir)
        self.reconciler.ledger = Ledger(state, inputs)
        self.reconciler.cache = project.read_hashes(self.settings.state_dir)
        self._warn_about_contexts()
        project.remove_stale(self.index, self.root, statuses)
        shown_by_images = project.files_showing(self.index, self.index.images)
        self._mark(set(self.files) - shown_by_images)  # the others: once their images are seen
        self._track_file_watches(mark=False)  # their files are written with the rest

    def _track_file_watches(self, mark: bool = True) -> None:
        """A FileWatch is monitored from when it is first seen (Tilt's monitorStartTime);
        one that is gone keeps no status."""
        watches, now = self.reconciler.state.file_watches, self.reconciler.clock()
        for name in self.index.file_watches.keys() - watches.keys():
            watches[name] = models.FileWatchStatus(monitor_start_time=now)
            if mark:
                self._mark([self.index.file_watch_locs[name].path])
        for name in watches.keys() - self.index.file_watches.keys():
            del watches[name]

    def _warn_about_contexts(self) -> None:
        """Build logs are written while builds run: a build whose folder holds the state
        folder would read them half-written, and docker fails on such a file."""
        state = self.settings.state_dir
        for name, image in sorted(self.index.images.items()):
            inside = image.dir == state.parent or image.dir in state.parents
            if inside and not sources.dockerignores(image.dir, state):
                logger.warning(
                    "{}: its build folder {} holds {}, which changes during builds; add {} to {}",
                    name,
                    image.dir,
                    state,
                    state.relative_to(image.dir).as_posix(),
                    image.dir / ".dockerignore",
                )

    def _set_index(self, index: Index) -> None:
        old, self.index = self.index, index
        self.reconciler.index = index
        self.roots = {
            name: self.roots[name]
            if name in self.roots and _sources_of(old, name) == _sources_of(index, name)
            else sources.roots(image, index)
            for name, image in index.images.items()
        }
        self._index_roots()

    def _index_roots(self) -> None:
        """Source roots by folder, so that a changed path finds its images by its parents
        (a handful of look-ups) rather than by asking every image."""
        before = set(self.roots_at)
        self.roots_at = {}
        for name, roots in self.roots.items():
            for root in roots:
                self.roots_at.setdefault(root.path, []).append((name, root))
        self._roots_moved |= set(self.roots_at) != before  # the folders to watch may change
        self._outside = [p for p in self.roots_at if self.root != p and self.root not in p.parents]

    def _images_touched(self, path: Path) -> set[str]:
        return {
            name
            for folder in (path, *path.parents)
            for name, root in self.roots_at.get(folder, ())
            if root.covers(path)
        }

    # --- the watch loop ----------------------------------------------------------------

    async def _watch_loop(self) -> None:
        """Batches from the watcher, until the daemon stops. When the folders to watch
        change, a new watcher starts and the old one keeps reporting until the new one's
        watches are in place, so no change falls between the two."""
        poll = self.settings.poll
        stopping = asyncio.create_task(self.stop.wait())
        current, retiring = self._start_watcher(poll), list[Watcher]()
        waits: dict[Watcher, asyncio.Future[frozenset[Path]]] = {}
        try:
            while True:
                for watcher in (current, *retiring):
                    if watcher not in waits:
                        waits[watcher] = asyncio.ensure_future(anext(watcher.stream))
                waiting: set[asyncio.Future[Any]] = {stopping, *waits.values()}
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if stopping in done:
                    return
                for watcher, future in [(w, f) for w, f in waits.items() if f in done]:
                    if waits.pop(watcher, None) is None:
                        continue  # retired (and its wait closed) by a READY of this round
                    try:
                        batch = future.result()
                    except OSError as exc:
                        if watcher is not current or poll or not _out_of_watches(exc):
                            raise
                        poll = True
                        logger.warning(
                            "inotify watch limit reached ({}); polling instead. Raise "
                            "fs.inotify.max_user_watches (sysctl) to watch with inotify again",
                            exc,
                        )
                        current = self._start_watcher(poll)
                        continue
                    if batch is READY and watcher is current:
                        for old in retiring:
                            await _close(old, waits.pop(old, None))
                        retiring = []
                        await self._on_watching()
                        if poll:
                            self._recheck_later(set())  # what the poller's first scan missed
                    elif batch is not READY and self._on_batch(set(batch), poll):
                        retiring.append(current)
                        current = self._start_watcher(poll)
        finally:
            stopping.cancel()
            for watcher in (current, *retiring):
                await _close(watcher, waits.pop(watcher, None))

    def _start_watcher(self, poll: bool) -> Watcher:
        before, self.watched = self.watched, self._watch_dirs()
        self._new_dirs |= self.watched - before if before else set()
        filter_ = sources.ChangeFilter(self.trigger_dir)
        quiet, cap = self.settings.debounce, self.settings.debounce_max
        return Watcher(self.watched, filter_, quiet, cap, poll)

    def _on_batch(self, paths: set[Path], poll: bool) -> bool:
        """Handle a batch; True when the folders to watch changed."""
        if poll:
            self._recheck_later(paths)
        return self._handle(paths)

    async def _on_watching(self) -> None:
        """A watcher's watches are in place. The first time, start the work; after a
        restart, look at what the new folders already hold (made before their watch)."""
        if not self.ready.is_set():
            await self.reconciler.prewarm(self.index.images)  # hash all in one go
            self._on_ready()
            return
        new, self._new_dirs = self._new_dirs, set()
        found = {p for d in new if d.is_dir() for p in project.files_under(d)}
        if found:  # the files themselves: naming the folders would walk them again
            self._handle(found)

    def _recheck_later(self, paths: set[Path]) -> None:
        """Polling compares mtimes to the second: a second save of a file in the second of
        the first, same size, goes unseen. So look at what a batch touched once more when
        that second is over; the content hashes (to the nanosecond) tell what changed."""

        def recheck() -> None:
            if paths:
                self._work_for(paths, self._spec_paths(paths))
            else:  # the first scan: a save in its second is as unseen
                self._work_for(set(self.files), set(self.files))
                self._request(set(self.index.images), "a second look after start-up")

        asyncio.get_running_loop().call_later(POLL_RECHECK_S, recheck)

    def _on_ready(self) -> None:
        """The watches are in place: from now on no change is missed, so start working,
        after a look at the spec files that changed between the first scan and now."""
        changed = {
            p for p in {*project.scan(self.root), *self._loaded} if _stat(p) != self._loaded.get(p)
        }
        if changed:
            self._handle(changed)
        logger.info(
            "watching {}: {} image(s) in {} spec file(s)",
            self.root,
            len(self.index.images),
            len(self.files),
        )
        self._request(set(self.index.images), "start-up")
        self.triggers.handle(self.trigger_dir.glob("*"))  # left by a daemon that died
        self.ready.set()
        self._spawn(self._report_start())

    async def _report_start(self) -> None:
        await self.scheduler.wait_idle()
        self._flush()  # "up to date" is on disk before start-up is called done
        counts: dict[str, int] = {}
        for row in views.rows(self.index, self.reconciler.state, self.root):
            counts[row.state] = counts.get(row.state, 0) + 1
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no images"
        took = time.monotonic() - self.started
        logger.info("start-up done in {:.2f} s: {}", took, summary)
        await asyncio.to_thread(
            project.write_hashes, self.settings.state_dir, self.reconciler.cache
        )

    @property
    def trigger_dir(self) -> Path:
        return self.settings.state_dir / "triggers"

    def _watch_dirs(self) -> set[Path]:
        """Every folder to watch: the tree's, pruned where all sources ignore it, plus the
        source folders outside the tree and the trigger folder."""
        self.trigger_dir.mkdir(parents=True, exist_ok=True)
        all_roots = [r for roots in self.roots.values() for r in roots]
        keep = {p.parent for p in self.files}
        found = {self.trigger_dir, *sources.watched_folders(self.root, all_roots, keep)}
        for root in all_roots:
            if root.path == self.root or self.root in root.path.parents:
                continue  # the tree's own walk covers it
            if root.path.is_dir():
                found.update(sources.watched_folders(root.path, all_roots, keep))
            elif root.path.parent.is_dir():
                found.add(root.path.parent)
        return found

    def _handle(self, paths: set[Path]) -> bool:
        """Turn one batch of changed paths into work; True when the watched folders change."""
        state_gone = self._state_folder_gone(paths)
        spec_paths = self._spec_paths(paths)
        self._work_for(paths, spec_paths)
        self._record_file_events(paths - set(self.files))
        self.triggers.handle(paths)
        moved = any(p.is_dir() or p in self.watched for p in paths) or self._outside_came()
        rewalk, self._roots_moved = moved or self._roots_moved, False
        if state_gone:  # the trigger folder is made anew: watch it, and look into it once
            self._new_dirs.add(self.trigger_dir)  # watched (so looked into at READY)
            return True
        return rewalk and self._watch_dirs() != self.watched  # else no walk: a save costs little

    def _state_folder_gone(self, paths: set[Path]) -> bool:
        """`git clean -fdx` took the state folder: take the lock again (or stop, if another
        daemon took the tree meanwhile), and say so, so the trigger folder is watched anew."""
        state = self.settings.state_dir
        if not any(p == state or state in p.parents for p in paths) or self._lock.held():
            return False
        logger.warning("{} was removed; making it again", state)
        try:
            self._lock.take_again()
        except LockedError as exc:
            logger.error("{}; stopping, and leaving its files to it", exc)
            self._lock_lost = True
            self.stop.set()
        return True

    def _spec_paths(self, paths: set[Path]) -> set[Path]:
        return project.spec_files_touched(paths, self.files.keys(), self.root)

    def _work_for(self, paths: set[Path], spec_paths: set[Path]) -> None:
        """Re-read the spec files among `paths`; request the images they or sources touch."""
        self.reconciler.cache.changed(paths)
        requested = self._reload(spec_paths) if spec_paths else {}
        requested.update(self._ignore_files_changed(paths))
        hits: dict[str, list[Path]] = {}
        for path in paths - set(self.files):  # a YAML file of none of ours can be a source
            for name in self._images_touched(path):
                hits.setdefault(name, []).append(path)
        for name, touched in hits.items():
            requested.setdefault(name, _relative(touched, self.root))
        self._request(set(requested), _cause(requested))

    def _outside_came(self) -> bool:
        """A source folder outside the tree that did not exist when last looked for: no
        watch can tell of it, so each batch (a spec save, say) looks."""
        return any(p not in self.watched and p.is_dir() for p in self._outside)

    def _ignore_files_changed(self, paths: set[Path]) -> dict[str, str]:
        folders = {p.parent for p in paths if p.name == ".dockerignore"}
        hit = {n: "changed .dockerignore" for n, i in self.index.images.items() if i.dir in folders}
        for name in hit:
            self.roots[name] = sources.roots(self.index.images[name], self.index)
        if hit:
            self._index_roots()
            self._roots_moved = True  # what the rules prune may have changed
        return hit

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """A task of the daemon's own, kept referenced until it is done."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _reload(self, paths: set[Path]) -> dict[str, str]:
        """Re-read these spec files; the images whose spec or context changed, with why."""
        old = self.index
        for path in paths:
            loaded = specfiles.load_spec_file(path) if path.exists() else SpecFile(path)
            if loaded.is_spec:
                self.files[path] = specfiles.keep_last_good(self.files.get(path), loaded)
                self._report(loaded)
            else:
                self.files.pop(path, None)
        self._set_index(build_index(self.files.values()))
        for name in set(old.images) - set(self.index.images):
            logger.info("{} removed: its spec is gone", name)
            self.scheduler.cancel(name)
            self.reconciler.forget(name, old.images[name].publishes)
            self._shown.pop(name, None)
            self.triggers.removed(name)
        changed = _changed_images(old, self.index)
        self._track_file_watches()
        self._mark(paths)
        self._write_statuses(sorted(changed))
        return {name: "spec changed" for name in changed} | self._undefer(paths)

    def _undefer(self, paths: set[Path]) -> dict[str, str]:
        """Images whose plan was put off while their spec file was missing (a delete and
        recreate, an editor's rename-then-write save): it is back, so plan them now."""
        ledger = self.reconciler.ledger
        back = ledger.resume(
            n
            for n in ledger.deferred
            if n in self.index.images and self.index.images[n].loc.path in paths
        )
        forced = sorted(n for n, force in back.items() if force)
        self.scheduler.request(forced, force=True)
        self.triggers.resumed(forced)
        return {name: "its spec file is back" for name, force in back.items() if not force}

    def _report(self, loaded: SpecFile) -> None:
        errors = [loaded.error] if loaded.error else [e.error for e in loaded.entries if e.error]
        for error in errors:
            logger.error("{}", error)
            self.on_event(views.spec_error(loaded.path, error, self.reconciler.clock()))

    def _record_file_events(self, paths: set[Path]) -> None:
        now = self.reconciler.clock()
        state = self.reconciler.state
        for name, watch in self.index.file_watches.items():
            folder = self.index.file_watch_locs[name].path.parent
            roots = sources.file_watch_roots(watch, folder)
            seen = [str(p) for p in paths if any(r.covers(p) for r in roots)]
            if seen:
                state.file_watches[name] = status.file_event(
                    state.file_watches.get(name), now, seen
                )
                self._mark([self.index.file_watch_locs[name].path])

    def _mark(self, paths: Iterable[Path]) -> None:
        """Have these status files written soon: changes close together make one write."""
        self.writer.mark(paths)
        self._flush_soon()

    def _flush_soon(self) -> None:
        if self._flush_at is None:
            self._flush_at = asyncio.get_running_loop().call_later(STATUS_DELAY_S, self._flush)

    def _flush(self) -> None:
        if self._flush_at is not None:
            self._flush_at.cancel()  # when called before its time
            self._flush_at = None
        self.writer.flush()  # what waits for a build is flushed when that build's status changes

    def _request(self, names: set[str], cause: str) -> None:
        if cause != "start-up":
            self.reconciler.drop_prewarmed(names)  # a change: hash them afresh
            self._warn_of_storm(names, cause)
        self.scheduler.request(sorted(names))

    def _warn_of_storm(self, names: set[str], cause: str) -> None:
        """Count what the batch may rebuild: the images it touches and, as a new image of
        theirs changes what needs them, all that depend on them."""
        affected = self.index.downstream(names)
        if len(affected) <= self.settings.storm_threshold:
            return
        through = len(affected) - len(names & affected)
        logger.warning(
            "{} images to re-evaluate at once ({}{}); building in dependency order, {} at a time",
            len(affected),
            cause,
            f"; {through} of them through the images they need" if through else "",
            self.settings.max_parallel,
        )

    def _write_statuses(self, names: list[str]) -> None:
        self.writer.changed(names)
        self._flush_soon()
        for name in names:
            new = self.reconciler.state.images.get(name)
            if new is not None:
                for event in views.events(name, self._shown.get(name), new):
                    self.on_event(event)
                self._shown[name] = new


def _changed_images(old: Index, new: Index) -> set[str]:
    """Images that are new, or whose spec or anything it reads from the index changed;
    plus the images that depended on one that is gone."""
    changed = {name for name in new.images if _context(old, name) != _context(new, name)}
    gone = {old.images[n].publishes for n in set(old.images) - set(new.images)}
    changed |= {n for n, image in new.images.items() if gone & set(image.spec.image_maps)}
    return changed


def _sources_of(index: Index, name: str) -> object:
    image = index.images.get(name)
    return image and (image.dir, index.file_watches.get(f"image:{image.publishes}"))


def _context(index: Index, name: str) -> object:
    image = index.images.get(name)
    if image is None:
        return None
    maps = [(m, index.image_maps.get(m), index.publishers.get(m)) for m in image.spec.image_maps]
    watch = index.file_watches.get(f"image:{image.publishes}")
    frozen = index.frozen(name)
    return (image, index.cluster(image), maps, watch, frozen, index.blocked(name))


def _relative(paths: list[Path], root: Path) -> str:
    shown = sorted(str(p.relative_to(root)) if root in p.parents else str(p) for p in paths)
    more = f" (+{len(shown) - 3} more)" if len(shown) > 3 else ""
    return "changed files: " + ", ".join(shown[:3]) + more


def _cause(requested: dict[str, str]) -> str:
    causes = sorted(set(requested.values()))
    return "; ".join(causes[:3]) + (f" (+{len(causes) - 3} more)" if len(causes) > 3 else "")


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _out_of_watches(exc: OSError) -> bool:
    return exc.errno == errno.ENOSPC or "inotify" in str(exc)


async def _close(watcher: Watcher, waiting: asyncio.Future[frozenset[Path]] | None) -> None:
    if waiting is not None:
        waiting.cancel()
    await watcher.close()
