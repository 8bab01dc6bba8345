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


def configure_logging(level: str, sink: Any = None, serialize: bool = False) -> None:
    logger.remove()
    if serialize:
        logger.add(sink or sys.stderr, level=level, serialize=True)
    else:
        fmt = "{time:HH:mm:ss} {level: <7} {message}"
        logger.add(sink or sys.stderr, level=level, format=fmt, colorize=False)


class Output:
    """Plain, timestamped lines: for pipes, files and CI logs."""

    def __init__(self, level: str) -> None:
        self.level = level
        configure_logging(level)

    def build_line(self, name: str, line: str) -> None:
        print(f"{datetime.now():%H:%M:%S} {name} | {line}", flush=True)

    def event(self, event: dict[str, Any]) -> None:
        """Events are what log lines already say; only the JSON output prints them."""

    @contextmanager
    def showing(self, rows: Rows) -> Iterator[None]:
        yield


class JsonOutput(Output):
    """One JSON object per line on stdout: events and build output, for tools."""

    def __init__(self, level: str) -> None:
        self.level = level
        configure_logging(level, serialize=True)

    def build_line(self, name: str, line: str) -> None:
        self.event({"event": "output", "image": name, "line": line, "time": _now()})

    def event(self, event: dict[str, Any]) -> None:
        print(json.dumps(event, separators=(",", ":")), flush=True)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
