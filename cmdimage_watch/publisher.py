"""What the daemon tells the world: status files (on a short timer) and events.

Status changes close together make one write of a file (`STATUS_DELAY_S`); each change of
an image's status becomes the events `views.events` derives (build started, finished, …),
handed to `on_event` (the terminal, JSON lines; later a web UI). Fed by `reconcile`
(statuses), `dispatch` (spec errors, FileWatch events) and `daemon` (start-up, shutdown).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from cmdimage_watch import models, status, views
from cmdimage_watch.graph import Index
from cmdimage_watch.statusfiles import StatusCache
from cmdimage_watch.statuswriter import StatusWriter

STATUS_DELAY_S = 0.01  # status changes this close together are one write of the file
Event = dict[str, Any]


class Publisher:
    def __init__(
        self,
        index: Callable[[], Index],
        state: Callable[[], status.State],
        cache: StatusCache | None = None,
    ) -> None:
        self._state = state
        self.writer = StatusWriter(index, state, cache)
        self.on_event: Callable[[Event], None] = lambda event: None
        self._shown: dict[str, models.CmdImageStatus] = {}  # the last status events told of
        self._flush_at: asyncio.TimerHandle | None = None

    def statuses(self, names: list[str]) -> None:
        """These images' statuses changed: their files soon, their events now."""
        self.writer.changed(names)
        self._flush_soon()
        for name in names:
            new = self._state().images.get(name)
            if new is not None:
                for event in views.events(name, self._shown.get(name), new):
                    self.on_event(event)
                self._shown[name] = new

    def mark(self, paths: Iterable[Path]) -> None:
        """Have these status files written soon: changes close together make one write."""
        self.writer.mark(paths)
        self._flush_soon()

    def spec_error(self, path: Path, error: str, now: datetime) -> None:
        self.on_event(views.spec_error(path, error, now))

    def forget(self, name: str) -> None:
        self._shown.pop(name, None)

    def flush(self) -> None:
        """Write what is marked now (what waits for a build is written when it is over)."""
        if self._flush_at is not None:
            self._flush_at.cancel()  # when called before its time
            self._flush_at = None
        self.writer.flush()

    def _flush_soon(self) -> None:
        if self._flush_at is None:
            self._flush_at = asyncio.get_running_loop().call_later(STATUS_DELAY_S, self.flush)
