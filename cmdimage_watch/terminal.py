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
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

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


class LiveOutput(Output):
    """A live table of the images under the scrolling build output, on a terminal."""

    def __init__(self, level: str, console: Console | None = None) -> None:
        self.level = level
        self.console = console or Console()
        configure_logging(level, sink=self._log)

    def _log(self, message: Any) -> None:
        self.console.print(Text(str(message).rstrip("\n"), style="dim"), highlight=False)

    def build_line(self, name: str, line: str) -> None:
        prefix = Text(f"{name} | ", style=views.colour(name))
        self.console.print(prefix + Text.from_ansi(line), highlight=False, soft_wrap=True)

    @contextmanager
    def showing(self, rows: Rows) -> Iterator[None]:
        with Live(_Table(rows), console=self.console, refresh_per_second=8, transient=False):
            yield


class _Table:
    """Rendered anew on every refresh, so spinners spin and elapsed times grow."""

    def __init__(self, rows: Rows) -> None:
        self.rows = rows

    def __rich__(self) -> RenderableType:
        found = self.rows()
        if not found:
            return Text("no CmdImage in the tree yet", style="dim")
        return Group(Text(""), views.table(found, datetime.now(UTC), live=True))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pick(log_format: str, tui: bool, level: str) -> Output:
    if log_format == "json":
        return JsonOutput(level)
    if tui and sys.stdout.isatty():
        return LiveOutput(level)
    return Output(level)
