"""The long-running `watch`: lock, orphans, signals, start-up, the watch loop, shutdown.

It wires the parts (`specset`, `routes`, `reconcile`, `scheduler`, `triggers`,
`publisher`, `dispatch`) once, then hands each item of the `watchset` to `dispatch` until
a signal (or a lost lock) stops it; shutdown cancels the builds and writes what is known.
Run by `cli watch`; tests can give it a watcher factory of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from loguru import logger

from cmdimage_watch import filewatches, project, sources, status, timeline, views
from cmdimage_watch.builder import Builder
from cmdimage_watch.dispatch import Dispatch
from cmdimage_watch.gitops import GitHold
from cmdimage_watch.graph import Index
from cmdimage_watch.hashes import Hashes
from cmdimage_watch.ledger import Ledger
from cmdimage_watch.lifecycle import BuildRecords, LockedError, StateLock
from cmdimage_watch.publisher import Publisher
from cmdimage_watch.reconcile import Reconciler
from cmdimage_watch.routes import Routes
from cmdimage_watch.scheduler import Scheduler
from cmdimage_watch.settings import Settings
from cmdimage_watch.specset import SpecSet
from cmdimage_watch.statusfiles import StatusCache
from cmdimage_watch.triggers import Triggers
from cmdimage_watch.watcher import Watcher
from cmdimage_watch.watchset import Batch, Factory, Ready, Watching, WatchSet

RETRY_FIRST, RETRY_MAX = 1.0, 30.0  # seconds between pings of an engine that was down


class Daemon:
    def __init__(
        self, settings: Settings, builder: Builder, watchers: Factory | None = None
    ) -> None:
        self.settings, self.root = settings, settings.root
        self.trigger_dir = settings.state_dir / "triggers"
        self.specs = SpecSet(self.root, settings.state_dir / "specs.json")
        self.routes = Routes(self.root, self.trigger_dir)
        self.records = BuildRecords(settings.state_dir / "builds")
        builder.on_spawn = self.records.update
        self.reconciler = Reconciler(self.specs.index, builder, settings)
        self.statuses = StatusCache(settings.state_dir / "statuses.json")
        self.publisher = Publisher(
            lambda: self.specs.index, lambda: self.reconciler.state, self.statuses
        )
        self.reconciler.on_status = self.publisher.statuses
        self.scheduler = Scheduler(self.reconciler)
        self.triggers = Triggers(self.trigger_dir, self.scheduler, self._spawn)
        self.stop = asyncio.Event()
        self.ready = asyncio.Event()  # set once the first scan is done and builds requested
        watchers = watchers or watchfiles_watchers(settings, self.trigger_dir)
        self.watchset = WatchSet(watchers, self._watch_dirs, settings.poll, self.stop)
        self.dispatch = Dispatch(
            settings, self.specs, self.routes, self.scheduler, self.triggers, self.publisher,
            self.watchset,
        )  # fmt: skip
        self.git = GitHold(self.root, settings.state_dir, settings.debounce, self._after_git)
        self._held: list[int] = []  # numbers of the batches held while git works
        self.started = time.monotonic()
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock_lost = False  # another daemon took the tree after its state folder went

    @property
    def index(self) -> Index:
        return self.specs.index

    @property
    def state(self) -> status.State:
        return self.reconciler.state

    async def run(self) -> None:
        with StateLock(self.settings.state_dir, self.root) as self._lock:
            self.records.end_orphans(self.settings.stop_timeout)
            for sig in (signal.SIGINT, signal.SIGTERM):  # a flag: shutdown is the loop's end
                asyncio.get_running_loop().add_signal_handler(sig, self.stop.set)
            self._start()
            try:
                async with contextlib.aclosing(aiter(self.watchset)) as items:  # closes watchers
                    async for item in items:
                        if isinstance(item, Ready):
                            await self._on_watching(item)
                        elif self._on_batch(item):
                            self.watchset.rewatch()
            finally:
                await self.git.close()
                await self._shutdown()

    async def _shutdown(self) -> None:
        cancelled = await self.scheduler.shutdown(self.settings.stop_timeout + 5)
        if not self._lock_lost:  # else the tree is another daemon's now
            self.publisher.writer.write_all(self.root)
            project.write_hashes(self.settings.state_dir, self.reconciler.hashes.cache)
            self.statuses.save()
        if cancelled:
            logger.info("stopped; cancelled {} running build(s)", cancelled)
        else:
            logger.info("stopped")  # as uvicorn says it: no one wonders whether it hangs

    def _watch_dirs(self) -> set[Path]:
        return self.routes.watch_dirs(set(self.specs.files))

    # --- start-up ----------------------------------------------------------------------

    def _start(self) -> None:
        """The first scan: spec files, what earlier runs left, stale status files."""
        statuses = self.specs.scan()
        self.routes.update(Index(), self.index)
        self.reconciler.index = self.index
        state, inputs = project.read_state(self.index, self.settings.state_dir, self.statuses)
        self.reconciler.ledger = Ledger(state, inputs)
        self.reconciler.hashes = Hashes(project.read_hashes(self.settings.state_dir))
        warn_about_contexts(self.index, self.settings.state_dir)
        for path in sorted(sources.own_output()):
            if path == self.root or self.root in path.parents:
                logger.info("{} takes this daemon's output: never a source", path)
        project.remove_stale(self.index, self.root, statuses)
        shown_by_images = project.files_showing(self.index, self.index.images)
        # the others are written once their images are seen
        self.publisher.mark(set(self.specs.files) - shown_by_images)
        # FileWatches' files are written with the rest
        filewatches.track(self.index, self.state, self.reconciler.clock())

    async def _on_watching(self, ready: Ready) -> None:
        """A watcher's watches are in place. The first time, start the work; after a
        restart, look at what the new folders already hold (made before their watch)."""
        if not self.ready.is_set():
            await self.reconciler.hashes.prewarm(self.index.images, self.index)  # in one go
            self._on_ready()
        else:
            new = self.watchset.take_new_dirs()
            found = {p for d in new if d.is_dir() for p in project.files_under(d)}
            if found:  # the files themselves: naming the folders would walk them again
                self._handle(found)
        if ready.poll:
            self.dispatch.recheck_later(set())  # what the poller's first scan missed

    def _on_ready(self) -> None:
        """The watches are in place: from now on no change is missed, so start working,
        after a look at the spec files that changed between the first scan and now."""
        changed = self.specs.changed_since_scan()
        if changed:
            self._handle(changed)
        files, images = len(self.specs.files), len(self.index.images)
        how = " by polling" if self.watchset.poll else ""  # --poll, or out of inotify
        logger.info("watching {}{}: {} image(s) in {} spec file(s)", self.root, how, images, files)
        self.dispatch.request(set(self.index.images), "start-up")
        self.triggers.handle(self.trigger_dir.glob("*"))  # left by a daemon that died
        self.ready.set()
        self._spawn(self._report_start())
        self._spawn(self._watch_engines())

    async def _report_start(self) -> None:
        await self.scheduler.wait_idle()
        self.publisher.flush()  # "up to date" is on disk before start-up is called done
        summary = views.summary(views.rows(self.index, self.state, self.root))
        took = time.monotonic() - self.started
        logger.info("start-up done in {:.2f} s: {}", took, summary)
        await asyncio.to_thread(
            project.write_hashes, self.settings.state_dir, self.reconciler.hashes.cache
        )
        await asyncio.to_thread(self.statuses.save)

    # --- batches -----------------------------------------------------------------------

    def _on_batch(self, batch: Batch) -> bool:
        """Handle a batch; True when the folders to watch changed."""
        timeline.mark("loop", len(batch.paths))
        number = self.dispatch.count(batch.paths)
        if self.git.offer(batch.paths):  # git is rewriting the tree: one batch when done
            self._held.append(number)
            return False
        if batch.poll:
            self.dispatch.recheck_later(batch.paths)
        rewatch = self._handle(batch.paths)
        self._spawn(self.dispatch.report_idle(number))
        return rewatch

    def _after_git(self, paths: set[Path], why: str) -> None:
        """The batches held while git worked, as one."""
        if self.watchset.poll:
            self.dispatch.recheck_later(paths)  # after the operation, not in its middle
        if self._handle(paths, why):
            self.watchset.rewatch_now()
        held, self._held = self._held, []
        for number in held:
            self._spawn(self.dispatch.report_idle(number))

    def _handle(self, paths: set[Path], why: str = "") -> bool:
        state_gone = self._state_folder_gone(paths)
        rewatch = self.dispatch.handle(paths, why)
        if state_gone:  # the trigger folder is made anew: watch it, and look into it once
            self.watchset.new_dirs.add(self.trigger_dir)  # watched (so looked into at Ready)
            return True
        return rewatch

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

    async def _watch_engines(self) -> None:
        """SPEC §7: recover when an engine returns. Images that failed or waited only
        because their engine did not answer are built again once it does (pinged with
        backoff, 1 s up to 30 s); a build that failed on its own merits waits for a change."""
        delay = RETRY_FIRST
        while True:
            await asyncio.sleep(delay)
            ledger = self.reconciler.ledger
            addresses = sorted(set(ledger.unreachable.values()))
            back = [a for a in addresses if await self.reconciler.builder.answers(a)]
            for address in back:
                names = ledger.engine_back(address)
                logger.info("engine at {} is back: building {}", address, ", ".join(names))
                self.dispatch.request(set(names), f"engine at {address} is back")
            delay = RETRY_FIRST if back or not addresses else min(delay * 2, RETRY_MAX)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """A task of the daemon's own, kept referenced until it is done."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def watchfiles_watchers(settings: Settings, trigger_dir: Path) -> Factory:
    """Watchers on watchfiles, with the daemon's debounce and filter."""
    quiet, cap, filter_ = (
        settings.debounce,
        settings.debounce_max,
        sources.ChangeFilter(trigger_dir),
    )

    def start(dirs: set[Path], poll: bool) -> Watching:
        return Watcher(dirs, filter_, quiet, cap, poll)

    return start


def warn_about_contexts(index: Index, state: Path) -> None:
    """Build logs are written while builds run: a build whose folder holds the state
    folder would read them half-written, and docker fails on such a file."""
    for name, image in sorted(index.images.items()):
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
