"""What people and scripts see of the images: table rows, JSON, events and the graph.

Fed an `Index` and a `status.State` (the daemon's memory, or what the status files say),
it returns rows, rich renderables, dicts and text; `cli` prints them. Pure: `now` is an
argument, so the same facts render the same way in a test.
"""

from __future__ import annotations

import html
import zlib
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmdimage_watch import models, status
from cmdimage_watch.graph import Index

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

COLOURS = (
    "cyan",
    "magenta",
    "green",
    "yellow",
    "blue",
    "bright_red",
    "bright_cyan",
    "bright_magenta",
    "bright_green",
    "bright_yellow",
    "bright_blue",
)
STATE_STYLES = {
    "ok": "green",
    "failed": "red",
    "building": "yellow",
    "waiting": "blue",
    "invalid": "red",
    "pending": "dim",
}


def colour(name: str) -> str:
    """The colour of an image's name, the same on every run (as compose and Tilt do)."""
    return COLOURS[zlib.crc32(name.encode()) % len(COLOURS)]


@dataclass(frozen=True)
class Row:
    name: str
    state: str  # ok | failed | building | waiting | invalid | pending
    reason: str  # why it built (or why it waits)
    ref: str
    error: str
    file: str
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def duration(self, now: datetime) -> float | None:
        if self.started_at is None:
            return None
        return ((self.finished_at or now) - self.started_at).total_seconds()

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "reason": self.reason,
            "ref": self.ref,
            "error": self.error,
            "file": self.file,
            "startedAt": models.format_time(self.started_at) if self.started_at else None,
            "finishedAt": models.format_time(self.finished_at) if self.finished_at else None,
            "durationSeconds": _round(self.duration(now)),
        }


def rows(index: Index, state: status.State, root: Path) -> list[Row]:
    """One row per CmdImage of the tree, valid or not, by name."""
    found = []
    for spec_file in index.files.values():
        for entry in spec_file.entries:
            if entry.kind != "CmdImage":
                continue
            shown = (
                str(entry.loc.path.relative_to(root))
                if root in entry.loc.path.parents
                else str(entry.loc.path)
            )
            problem = index.problem(entry)
            if problem and entry.loc not in index.kept:
                found.append(Row(entry.name, "invalid", problem, "", problem, shown))
                continue
            shown_row = row(entry.name, state.images.get(entry.name), shown)
            broken = problem or spec_file.error  # its last good object is kept meanwhile
            found.append(replace(shown_row, error=broken) if broken else shown_row)
    return sorted(found, key=lambda r: r.name)


def kept_rows(
    kept: list[tuple[Path, str, models.CmdImageStatus]], index: Index, root: Path
) -> list[Row]:
    """Rows for the images of spec files that cannot be parsed, from their last status,
    each with its file's error: an image does not vanish from the table over a typo."""
    found = []
    for path, name, value in kept:
        shown = str(path.relative_to(root)) if root in path.parents else str(path)
        found.append(replace(row(name, value, shown), error=index.files[path].error))
    return found


def all_rows(
    index: Index,
    state: status.State,
    root: Path,
    kept: list[tuple[Path, str, models.CmdImageStatus]],
) -> list[Row]:
    """What `status` lists: `rows`, and `kept_rows` of the files that cannot be parsed."""
    return sorted(rows(index, state, root) + kept_rows(kept, index, root), key=lambda r: r.name)


def row(name: str, value: models.CmdImageStatus | None, file: str) -> Row:
    if value is None:
        return Row(name, "pending", "", "", "", file)
    if value.building is not None:
        return Row(name, "building", value.building.reason, "", "", file, value.building.started_at)
    if value.waiting is not None:
        return Row(name, "waiting", value.waiting.reason, "", "", file)
    done = value.completed
    if done is None:
        return Row(name, "pending", "", value.ref, "", file)
    state = "failed" if done.error else "ok"
    return Row(
        name, state, done.reason, value.ref, done.error, file, done.started_at, done.finished_at
    )


def summary(found: list[Row]) -> str:
    """How many images are in each state: `2 ok, 1 failed`."""
    counts: dict[str, int] = {}
    for r in found:
        counts[r.state] = counts.get(r.state, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no images"


def table(found: list[Row], now: datetime, live: bool = False) -> Table:
    """The images as a table; `live` adds a spinner to building rows."""
    # rich is imported when a table is first drawn: the daemon without --tui never draws one
    from rich.spinner import Spinner
    from rich.table import Table
    from rich.text import Text

    grid = Table(box=None, pad_edge=False, expand=False)
    for column in ("IMAGE", "STATE", "CAUSE", "AGE", "TIME", "REF", "ERROR"):
        # a narrow terminal shortens the cause and ref (each cell stays one line, cut
        # with "…") and wraps the error; never the name, state or times
        shrinks = column in ("CAUSE", "REF", "ERROR")
        grid.add_column(column, no_wrap=not shrinks, overflow="ellipsis")
    for r in found:
        state: Text | Spinner = Text(r.state, style=STATE_STYLES[r.state])
        if live and r.state == "building":
            state = Spinner("dots", text=Text("building", style=STATE_STYLES["building"]))
        grid.add_row(
            Text(r.name, style=colour(r.name)),
            state,
            _cut(r.reason if r.state != "invalid" else "invalid spec"),
            _age(r, now),
            _seconds(r.duration(now)),
            _cut(r.ref),
            Text(r.error.splitlines()[0] if r.error else "", style="red"),
        )
    return grid


def _cut(value: str) -> Text:
    from rich.text import Text

    return Text(value, no_wrap=True, overflow="ellipsis")


def _age(r: Row, now: datetime) -> str:
    if r.finished_at is None:
        return ""
    return _seconds((now - r.finished_at).total_seconds()) + " ago"


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    if value < 59.95:
        return f"{value:.1f}s"
    whole = round(value)  # before splitting, so that 119.6 s shows as 2m00s, not 1m60s
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# --- events ----------------------------------------------------------------------------


def events(
    name: str, old: models.CmdImageStatus | None, new: models.CmdImageStatus
) -> list[dict[str, Any]]:
    """What happened to `name` between two of its statuses, as event objects for tools."""
    if new.building is not None and (old is None or old.building != new.building):
        building = new.building
        return [
            _event(
                "build_started",
                name,
                reason=building.reason,
                time=models.format_time(building.started_at),
            )
        ]
    done = new.completed
    if done is None or (old is not None and old.completed == done):
        return []
    if done.reason == "up to date":
        return [_event("up_to_date", name, ref=new.ref, time=models.format_time(done.finished_at))]
    kind = "build_finished"
    if done.error:
        kind = "build_cancelled" if done.error.startswith("build cancelled") else "build_failed"
    return [
        _event(
            kind,
            name,
            reason=done.reason,
            ref=new.ref,
            error=done.error,
            time=models.format_time(done.finished_at),
            durationSeconds=_round((done.finished_at - done.started_at).total_seconds()),
        )
    ]


def output_event(name: str, line: str, now: datetime) -> dict[str, Any]:
    """A line a build printed, as an event."""
    return {"event": "output", "image": name, "line": line, "time": models.format_time(now)}


def spec_error(file: Path, error: str, now: datetime) -> dict[str, Any]:
    return _event("spec_error", "", file=str(file), error=error, time=models.format_time(now))


def _event(kind: str, name: str, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"event": kind}
    if name:
        out["image"] = name
    out.update({k: v for k, v in fields.items() if v not in ("", None)})
    return out


# --- the dependency graph --------------------------------------------------------------


def edges(index: Index) -> list[tuple[str, str, str]]:
    """(needed image or ImageMap, dependent image, ImageMap name) for every dependency."""
    out = []
    for name in sorted(index.images):
        for map_name in index.images[name].spec.image_maps:
            source = index.publishers.get(map_name, f"imagemap:{map_name}")
            out.append((source, name, map_name))
    return out


def dot(index: Index, found: list[Row]) -> str:
    lines = ["digraph images {", "  rankdir=LR;", "  node [shape=box, style=rounded];"]
    for r in found:
        lines.append(f'  "{r.name}" [label="{r.name}\\n{r.state}", color={_dot_colour(r.state)}];')
    for source, target, map_name in edges(index):
        lines.append(f'  "{source}" -> "{target}" [label="{map_name}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def mermaid(index: Index, found: list[Row]) -> str:
    ids = {r.name: f"n{i}" for i, r in enumerate(found)}
    lines = ["graph LR"]
    for r in found:
        lines.append(f'  {ids[r.name]}["{r.name}<br/>{r.state}"]:::{r.state}')
    for source, target, map_name in edges(index):
        src = ids.get(source) or _external(ids, source)
        lines.append(f"  {src} -->|{map_name}| {ids.get(target, target)}")
    for state, style in STATE_STYLES.items():
        lines.append(f"  classDef {state} stroke:{_css(style)}")
    return "\n".join(lines) + "\n"


def _external(ids: dict[str, str], source: str) -> str:
    key = f"x{len(ids)}"
    ids[source] = key
    return f'{key}(["{source}"])'


def _dot_colour(state: str) -> str:
    return {"ok": "green", "failed": "red", "invalid": "red", "building": "orange"}.get(
        state, "gray"
    )


def _css(style: str) -> str:
    return {"green": "#2a2", "red": "#c22", "yellow": "#ca2", "blue": "#26c"}.get(style, "#999")


SVG_FILL = {  # state -> a fill light enough to read on; the stroke is the table's colour
    "ok": "#dff3df",
    "failed": "#f8dcdc",
    "invalid": "#f8dcdc",
    "building": "#fbf0c8",
    "waiting": "#dde6f8",
    "pending": "#eeeeee",
}
NODE_H, ROW_H, COL_GAP, CHAR_W = 38, 50, 60, 7.2


def svg(index: Index, found: list[Row]) -> str:
    """The dependency graph as SVG: one column per depth (what an image is built from is
    to its left), each box coloured by its image's state; an ImageMap that no CmdImage of
    the tree publishes is a dashed box."""
    states = {r.name: r.state for r in found}
    links = edges(index)
    needs: dict[str, list[str]] = {}
    for source, target, _ in links:
        needs.setdefault(target, []).append(source)
        needs.setdefault(source, [])
    for name in states:
        needs.setdefault(name, [])
    depth: dict[str, int] = {}

    def depth_of(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name not in depth:  # a cycle (an invalid tree) counts as a root
            deps = [d for d in needs[name] if d not in seen]
            depth[name] = 1 + max((depth_of(d, seen | {name}) for d in deps), default=-1)
        return depth[name]

    columns: dict[int, list[str]] = {}
    for name in sorted(needs):
        columns.setdefault(depth_of(name), []).append(name)
    boxes: dict[str, tuple[float, float, float]] = {}  # name -> x, y, width
    x = 10.0
    for level in sorted(columns):
        width = max(len(_label(n)) for n in columns[level]) * CHAR_W + 24
        for i, name in enumerate(columns[level]):
            boxes[name] = (x, 10.0 + i * ROW_H, width)
        x += width + COL_GAP
    height = 20 + max((len(c) for c in columns.values()), default=0) * ROW_H
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="{x:.0f}" '
        f'height="{height}" viewBox="0 0 {x:.0f} {height}" font-family="sans-serif">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#888"/></marker>'
        "</defs>",
    ]
    for source, target, map_name in links:
        sx, sy, sw = boxes[source]
        tx, ty, _ = boxes[target]
        x1, y1, x2, y2 = sx + sw, sy + NODE_H / 2, tx, ty + NODE_H / 2
        mid = (x1 + x2) / 2
        out.append(
            f'<path class="edge" d="M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} '
            f'{x2 - 2:.0f},{y2:.0f}" fill="none" stroke="#888" marker-end="url(#arrow)">'
            f"<title>{_xml(target)} is built from image map {_xml(map_name)}</title></path>"
        )
    for name, (bx, by, bw) in sorted(boxes.items()):
        state = states.get(name, "")
        fill, stroke = SVG_FILL.get(state, "#ffffff"), _css(STATE_STYLES.get(state, ""))
        dash = "" if state else ' stroke-dasharray="4 3"'
        out.append(
            f'<g class="node state-{state or "external"}" data-name="{_xml(name)}">'
            f"<title>{_xml(name)}: {state or 'not built by this tree'}</title>"
            f'<rect x="{bx:.0f}" y="{by:.0f}" width="{bw:.0f}" height="{NODE_H}" rx="6" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="1.5"{dash}/>'
            f'<text x="{bx + 12:.0f}" y="{by + 16:.0f}" font-size="12" font-weight="bold">'
            f"{_xml(_label(name))}</text>"
            f'<text x="{bx + 12:.0f}" y="{by + 31:.0f}" font-size="11" fill="{stroke}">'
            f"{state or 'image map'}</text></g>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _label(name: str) -> str:
    return name.removeprefix("imagemap:")


def _xml(text: str) -> str:
    return html.escape(text, quote=True)
