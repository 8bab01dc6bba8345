"""Manual triggers: `cmdimage-watch trigger NAME` writes `.cmdimage-watch/triggers/NAME`.

The daemon's watcher reports the file; this forces NAME's build and removes the file only
once that build is over, so `wait` can tell a build still to come from one done. Fed
paths by `dispatch` (and by `daemon` at start-up); feeds forced requests to the `scheduler`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

from loguru import logger

from cmdimage_watch.reconcile import Reconciler
from cmdimage_watch.scheduler import Scheduler
from cmdimage_watch.settings import state_file_name
from cmdimage_watch.statusfiles import write_if_changed

Spawn = Callable[[Coroutine[Any, Any, None]], None]


class Triggers:
    def __init__(self, folder: Path, scheduler: Scheduler, spawn: Spawn) -> None:
        self.folder = folder
        self.scheduler = scheduler
        self.reconciler: Reconciler = scheduler.reconciler
        self._spawn = spawn  # the daemon's: its tasks end with it
        self._under_way: dict[str, bytes] = {}  # trigger files whose builds are to come

    def handle(self, paths: Iterable[Path]) -> None:
        """Force the builds of the trigger files among `paths` not under way already."""
        found = {}
        for path in paths:
            if path.parent != self.folder or path.name.startswith("."):
                continue  # "." names are `trigger`'s temp files, renamed into place
            with contextlib.suppress(OSError, UnicodeDecodeError):
                content = path.read_bytes()
                name = _named(content) or path.name
                if self._under_way.get(name) != content:
                    found[name] = content
        if found:
            logger.info("triggered: {}", ", ".join(sorted(found)))
            self._under_way.update(found)
            self.reconciler.hashes.drop(found)
            self.scheduler.request(sorted(found), force=True)
            self._spawn(self._clear(found))

    def resumed(self, names: Iterable[str]) -> None:
        """These forced builds were put off (their spec file was missing) and are asked
        for again: their trigger files go once they are over."""
        left = {n: self._under_way[n] for n in names if n in self._under_way}
        if left:
            self._spawn(self._clear(left))

    def removed(self, name: str) -> None:
        """`name`'s spec is gone: a trigger of it will have no build."""
        if self._under_way.pop(name, None) is not None:
            (self.folder / state_file_name(name)).unlink(missing_ok=True)

    async def _clear(self, triggers: dict[str, bytes]) -> None:
        await self.scheduler.wait_idle(triggers)
        for name, seen in triggers.items():
            if name in self.reconciler.ledger.deferred:
                continue  # its build waits for its spec file: cleared after that (resumed)
            if self._under_way.get(name) == seen:
                del self._under_way[name]
            path = self.folder / state_file_name(name)
            with contextlib.suppress(OSError):
                if path.read_bytes() == seen:  # else triggered again since; that one clears it
                    path.unlink()


def request(folder: Path, name: str) -> Path:
    """Ask the daemon watching `folder`'s tree to build `name` now (`trigger`, the web UI):
    the time, then the name (a long one's file name is cut, `settings.state_file_name`)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / state_file_name(name)
    write_if_changed(path, f"{time.time()}\n{name}\n")
    return path


def _named(content: bytes) -> str:
    """The image a trigger file names on its second line (`trigger` writes the time, then
    the name); "" for an older one, named by its file alone."""
    lines = content.decode("utf-8").splitlines()
    return lines[1] if len(lines) > 1 else ""
