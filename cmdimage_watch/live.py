"""The live table of the images under the scrolling build output, on a terminal.

Apart from `terminal` so that rich is imported only when a terminal shows the table: the
daemon under a service manager, piped or with `--no-tui`, starts without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from cmdimage_watch import views
from cmdimage_watch.terminal import Output, Rows


class LiveOutput(Output):
    """A live table of the images under the scrolling build output, on a terminal."""

    def __init__(self, level: str, console: Console | None = None) -> None:
        self.console = console or Console()
        super().__init__(level, sink=self._log)

    def _log(self, message: Any) -> None:
        self.console.print(Text(str(message).rstrip("\n"), style="dim"), highlight=False)

    def show_line(self, name: str, line: str) -> None:
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
