"""A batch of changed paths turned into work: the images it touches, and why.

Spec files among the paths are re-read (`specset`), the index and the routes follow, and
the images whose spec, context or sources a path touches are handed to the `scheduler`
with a cause (`changed files: …`, `spec changed`). Images that are gone are cancelled and
forgotten; trigger files go to `triggers`; FileWatch events and spec errors to the
`publisher`. Fed by `daemon`, batch by batch; says when the folders to watch changed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from loguru import logger

from cmdimage_watch import filewatches
from cmdimage_watch.publisher import Publisher
from cmdimage_watch.reconcile import Reconciler
from cmdimage_watch.routes import Routes
from cmdimage_watch.scheduler import Scheduler
from cmdimage_watch.settings import Settings
from cmdimage_watch.specset import Reload, SpecSet
from cmdimage_watch.triggers import Triggers
from cmdimage_watch.watchset import WatchSet

POLL_RECHECK_S = 1.1


class Dispatch:
    def __init__(
        self,
        settings: Settings,
        specs: SpecSet,
        routes: Routes,
        scheduler: Scheduler,
        triggers: Triggers,
        publisher: Publisher,
        watchset: WatchSet,
    ) -> None:
        self.settings = settings
        self.specs, self.routes, self.watchset = specs, routes, watchset
        self.scheduler, self.triggers, self.publisher = scheduler, triggers, publisher
        self.reconciler: Reconciler = scheduler.reconciler
        self._batches = 0  # seen so far: at `-v`, each is listed and said to be over

    def count(self, paths: set[Path]) -> int:
        """Number a batch from the watchers (listed at `-v`: a branch switch is long)."""
        self._batches += 1
        number = self._batches
        logger.opt(lazy=True).debug("batch {}: {}", lambda: number, lambda: listed(paths))
        return number

    async def report_idle(self, batch: int) -> None:
        """Say when the work a batch started is over and its statuses are written, so a
        reader of the log (the tests) can wait for that rather than for a fixed time."""
        await self.scheduler.wait_idle()
        self.publisher.flush()
        logger.debug("idle after batch {}", batch)

    def handle(self, paths: set[Path], why: str = "") -> bool:
        """Turn one batch of changed paths into work; True when the watched folders change.
        `why` names what made the batch (a git operation) as its builds' cause."""
        self.work_for(paths, self.specs.touched(paths), why)
        state, now = self.reconciler.state, self.reconciler.clock()
        seen = paths - set(self.specs.files)
        hit = filewatches.record(self.specs.index, state, seen, now)
        if hit:
            self.publisher.mark(hit)
        self.triggers.handle(paths)
        watched = self.watchset.watched
        moved = any(p.is_dir() or p in watched for p in paths) or self.routes.outside_came(watched)
        roots_moved = self.routes.take_moved()
        if not (moved or roots_moved):
            return False  # no walk: a save costs little
        return self.routes.watch_dirs(set(self.specs.files)) != watched

    def work_for(self, paths: set[Path], spec_paths: set[Path], why: str = "") -> None:
        """Re-read the spec files among `paths`; request the images they or sources touch."""
        self.reconciler.hashes.cache.changed(paths)
        requested = self._reload(spec_paths) if spec_paths else {}
        requested.update(self._ignore_files_changed(paths))
        hits: dict[str, list[Path]] = {}
        for path in paths - set(self.specs.files):  # a YAML file of none of ours is a source
            for name in self.routes.images_touched(path):
                hits.setdefault(name, []).append(path)
        for name, touched in hits.items():
            requested.setdefault(name, relative(touched, self.settings.root))
        if why:
            requested = dict.fromkeys(requested, why)
            self.reconciler.ledger.reasons.update(requested)  # if they build, that is why
        self.request(set(requested), cause(requested))

    def recheck_later(self, paths: set[Path]) -> None:
        """Polling compares mtimes to the second: a second save of a file in the second of
        the first, same size, goes unseen. So look at what a batch touched once more when
        that second is over; the content hashes (to the nanosecond) tell what changed."""

        def recheck() -> None:
            if paths:
                self.work_for(paths, self.specs.touched(paths))
            else:  # the first scan: a save in its second is as unseen
                files = set(self.specs.files)
                self.work_for(files, files)
                self.request(set(self.specs.index.images), "a second look after start-up")

        asyncio.get_running_loop().call_later(POLL_RECHECK_S, recheck)

    def request(self, names: set[str], why: str) -> None:
        if why != "start-up":
            self.reconciler.hashes.drop(names)  # a change: hash them afresh
            self._warn_of_storm(names, why)
        self.scheduler.request(sorted(names))

    def _reload(self, paths: set[Path]) -> dict[str, str]:
        """Re-read these spec files; the images whose spec or context changed, with why."""
        reload = self.specs.reload(paths)
        now = self.reconciler.clock()
        for path, error in reload.errors:
            logger.error("{}", error)
            self.publisher.spec_error(path, error, now)
        self.routes.update(reload.old, self.specs.index)
        self.reconciler.index = self.specs.index
        self._drop(reload)
        new_watches = filewatches.track(self.specs.index, self.reconciler.state, now)
        self.publisher.mark([*new_watches, *paths])
        self.publisher.statuses(sorted(reload.changed))
        return {name: "spec changed" for name in reload.changed} | self._undefer(paths)

    def _drop(self, reload: Reload) -> None:
        for name in sorted(reload.gone):
            logger.info("{} removed: its spec is gone", name)
            self.scheduler.cancel(name)
            self.reconciler.forget(name, reload.old.images[name].publishes)
            self.publisher.forget(name)
            self.triggers.removed(name)

    def _undefer(self, paths: set[Path]) -> dict[str, str]:
        """Images whose plan was put off while their spec file was missing (a delete and
        recreate, an editor's rename-then-write save): it is back, so plan them now."""
        images, ledger = self.specs.index.images, self.reconciler.ledger
        back = ledger.resume(
            [n for n in ledger.deferred if n in images and images[n].loc.path in paths]
        )
        forced = sorted(n for n, force in back.items() if force)
        self.scheduler.request(forced, force=True)
        self.triggers.resumed(forced)
        return {name: "its spec file is back" for name, force in back.items() if not force}

    def _ignore_files_changed(self, paths: set[Path]) -> dict[str, str]:
        folders = {p.parent for p in paths if p.name == ".dockerignore"}
        images = self.specs.index.images
        hit = {n: "changed .dockerignore" for n, i in images.items() if i.dir in folders}
        self.routes.reroot(set(hit), self.specs.index)
        return hit

    def _warn_of_storm(self, names: set[str], why: str) -> None:
        """Count what the batch may rebuild: the images it touches and, as a new image of
        theirs changes what needs them, all that depend on them."""
        affected = self.specs.index.downstream(names)
        if len(affected) <= self.settings.storm_threshold:
            return
        through = len(affected) - len(names & affected)
        logger.warning(
            "{} images to re-evaluate at once ({}{}); building in dependency order, {} at a time",
            len(affected),
            why,
            f"; {through} of them through the images they need" if through else "",
            self.settings.max_parallel,
        )


def listed(paths: set[Path], most: int = 10) -> str:
    shown = sorted(str(p) for p in paths)
    more = f" (+{len(shown) - most} more)" if len(shown) > most else ""
    return ", ".join(shown[:most]) + more


def relative(paths: list[Path], root: Path) -> str:
    shown = sorted(str(p.relative_to(root)) if root in p.parents else str(p) for p in paths)
    more = f" (+{len(shown) - 3} more)" if len(shown) > 3 else ""
    return "changed files: " + ", ".join(shown[:3]) + more


def cause(requested: dict[str, str]) -> str:
    causes = sorted(set(requested.values()))
    return "; ".join(causes[:3]) + (f" (+{len(causes) - 3} more)" if len(causes) > 3 else "")
