"""How the command line shows a running daemon: plain lines, JSON lines, or a live table.

Part of the command line (only `cli` uses it): build output, log lines and events go
through one `Output`, which `cli` picks from the flags and whether stdout is a terminal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from loguru import logger

from cmdimage_watch import views

Rows = Callable[[], list[views.Row]]
Event = dict[str, Any]


def configure_logging(level: str, sink: Any = None, serialize: bool = False) -> None:
    logger.remove()
    if serialize:
        logger.add(sink or sys.stderr, level=level, serialize=True)
    else:
        fmt = "{time:HH:mm:ss} {level: <7} {message}"
        logger.add(sink or sys.stderr, level=level, format=fmt, colorize=False)


class Output:
    """Plain, timestamped lines: for pipes, files and CI logs.

    Every event, build output included, also goes to each of `listeners` (the dashboard)
    as the object `--log-format json` prints."""

    def __init__(self, level: str, sink: Any = None, serialize: bool = False) -> None:
        self.level = level
        self.listeners: list[Callable[[Event], None]] = []
        configure_logging(level, sink, serialize)

    def build_line(self, name: str, line: str) -> None:
        self.show_line(name, line)
        if self.listeners:
            self._tell(views.output_event(name, line, datetime.now(UTC)))

    def event(self, event: Event) -> None:
        self.show_event(event)
        self._tell(event)

    def show_line(self, name: str, line: str) -> None:
        print(f"{datetime.now():%H:%M:%S} {name} | {line}", flush=True)

    def show_event(self, event: Event) -> None:
        """Events are what log lines already say; only the JSON output prints them."""

    def _tell(self, event: Event) -> None:
        for listener in self.listeners:
            listener(event)

    @contextmanager
    def showing(self, rows: Rows) -> Iterator[None]:
        yield


class JsonOutput(Output):
    """One JSON object per line on stdout: events and build output, for tools."""

    def __init__(self, level: str) -> None:
        super().__init__(level, serialize=True)

    def build_line(self, name: str, line: str) -> None:
        self.event(views.output_event(name, line, datetime.now(UTC)))

    def show_event(self, event: Event) -> None:
        print(json.dumps(event, separators=(",", ":")), flush=True)
