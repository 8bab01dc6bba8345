"""Rows, the table, events and the graph, from indexes of real spec files and fixed times."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from cmdimage_watch import models, status, views
from cmdimage_watch.graph import Index, build_index
from cmdimage_watch.specfiles import keep_last_good, load_spec_file
from tests.helpers import cmdimage, imagemap, index_of, schema, write

T0 = datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=UTC)
T1 = datetime(2026, 11, 26, 12, 0, 5, 623456, tzinfo=UTC)  # T0 + 5.5 s
NOW = T1 + timedelta(minutes=2)
REF = "ok-img:tilt-0123456789abcdef"
FAILURE = 'Custom build "sh build.sh" failed: exit status 3; see the log /x/failed-img.log'
SPINNER = "[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]"  # rich's "dots"
BAD_REF = "Not A Ref!"
BAD_REF_MESSAGE = "invalid reference format: repository name (library/Not A Ref!) must be lowercase"


def render(
    found: list[views.Row], now: datetime = NOW, live: bool = False, width: int = 200
) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(views.table(found, now, live=live))
    return [line.rstrip() for line in out.getvalue().splitlines()]


def one_of_each(tmp_path: Path) -> tuple[Path, views.Row, list[views.Row]]:
    """A tree with an image in every state; its spec file, the invalid row, and all rows."""
    spec = write(
        tmp_path / "imgs" / "a.yaml",
        *(cmdimage(f"{s}-img") for s in ("ok", "failed", "building", "waiting", "pending")),
        cmdimage("bad-img", BAD_REF),
    )
    state = status.State()
    state.images["ok-img"] = status.succeeded(REF, "initial build", T0, T1)
    state.images["failed-img"] = status.failed(FAILURE + "\nmore", "spec changed", T0, T1)
    state.images["building-img"] = status.building("changed files: a.txt", T0)
    state.images["waiting-img"] = status.waiting("waiting for image map base")
    problem = (
        f"invalid spec: {spec}:11:99: spec.ref: invalid reference format: repository name "
        f"(library/{BAD_REF}) must be lowercase"
    )
    invalid = views.Row("bad-img", "invalid", problem, "", problem, "imgs/a.yaml")
    return spec, invalid, views.rows(index_of(spec), state, tmp_path)


# --- rows ----------------------------------------------------------------------------------


def test_rows_show_every_state_by_name_with_the_file_relative_to_the_root(
    tmp_path: Path,
) -> None:
    _, invalid, found = one_of_each(tmp_path)
    shown = "imgs/a.yaml"
    assert found == [
        invalid,
        views.Row("building-img", "building", "changed files: a.txt", "", "", shown, T0),
        views.Row("failed-img", "failed", "spec changed", "", FAILURE + "\nmore", shown, T0, T1),
        views.Row("ok-img", "ok", "initial build", REF, "", shown, T0, T1),
        views.Row("pending-img", "pending", "", "", "", shown),
        views.Row("waiting-img", "waiting", "waiting for image map base", "", "", shown),
    ]


def test_a_file_outside_the_root_is_shown_whole(tmp_path: Path) -> None:
    spec = write(tmp_path / "elsewhere" / "a.yaml", cmdimage("app"))
    found = views.rows(index_of(spec), status.State(), tmp_path / "tree")
    assert found == [views.Row("app", "pending", "", "", "", str(spec))]


def test_a_status_with_a_ref_but_nothing_completed_is_pending_with_its_ref() -> None:
    value = models.CmdImageStatus(ref="app:tilt-1")
    assert views.row("app", value, "a.yaml") == views.Row(
        "app", "pending", "", "app:tilt-1", "", "a.yaml"
    )


def test_a_kept_last_good_object_shows_its_state_and_the_spec_error(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yaml", cmdimage("app"))
    good = load_spec_file(path)
    write(path, cmdimage("app", BAD_REF))
    index = build_index([keep_last_good(good, load_spec_file(path))])
    state = status.State(images={"app": status.succeeded("app:tilt-1", "initial build", T0, T1)})
    (found,) = views.rows(index, state, tmp_path)
    assert found.error.startswith(f"invalid spec: {path}:1:")
    assert found.error.endswith("spec.ref: " + BAD_REF_MESSAGE)
    assert found == views.Row(
        "app", "ok", "initial build", "app:tilt-1", found.error, "a.yaml", T0, T1
    )


def test_a_file_that_cannot_be_parsed_shows_its_error_on_the_kept_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yaml", cmdimage("app"))
    good = load_spec_file(path)
    path.write_text("apiVersion: tilt.dev/v1alpha1\nkind: [\n")
    broken = keep_last_good(good, load_spec_file(path))
    assert broken.error
    state = status.State(images={"app": status.succeeded("app:tilt-1", "initial build", T0, T1)})
    (found,) = views.rows(build_index([broken]), state, tmp_path)
    assert (found.state, found.error) == ("ok", broken.error)


def test_to_json_has_every_field_with_times_and_a_rounded_duration(tmp_path: Path) -> None:
    _, invalid, found = one_of_each(tmp_path)
    by_name = {r.name: r for r in found}
    assert by_name["ok-img"].to_json(NOW) == {
        "name": "ok-img",
        "state": "ok",
        "reason": "initial build",
        "ref": REF,
        "error": "",
        "file": "imgs/a.yaml",
        "startedAt": "2026-11-26T12:00:00.123456Z",
        "finishedAt": "2026-11-26T12:00:05.623456Z",
        "durationSeconds": 5.5,
    }
    building = by_name["building-img"].to_json(T0 + timedelta(seconds=1.23456))
    assert (building["startedAt"], building["finishedAt"]) == ("2026-11-26T12:00:00.123456Z", None)
    assert building["durationSeconds"] == 1.235
    assert invalid.to_json(NOW) == {
        "name": "bad-img",
        "state": "invalid",
        "reason": invalid.error,
        "ref": "",
        "error": invalid.error,
        "file": "imgs/a.yaml",
        "startedAt": None,
        "finishedAt": None,
        "durationSeconds": None,
    }


# --- the table -----------------------------------------------------------------------------


def test_the_table_shows_cause_age_time_ref_and_the_first_line_of_the_error(
    tmp_path: Path,
) -> None:
    spec, _, found = one_of_each(tmp_path)
    lines = render(found)
    assert lines[0].split() == ["IMAGE", "STATE", "CAUSE", "AGE", "TIME", "REF", "ERROR"]
    assert lines[1].split()[:4] == ["bad-img", "invalid", "invalid", "spec"]
    words = " ".join(" ".join(lines).split())  # the error column wraps
    assert f"invalid spec: {spec}:11:99: spec.ref: invalid reference format: " in words
    rows = [line.split("  ") for line in lines if not line.startswith(" ")][2:]
    cells = [[cell.strip() for cell in row if cell.strip()] for row in rows]
    assert cells == [
        ["building-img", "building", "changed files: a.txt", "2m06s"],
        ["failed-img", "failed", "spec changed", "2m00s ago", "5.5s", FAILURE],
        ["ok-img", "ok", "initial build", "2m00s ago", "5.5s", REF],
        ["pending-img", "pending"],
        ["waiting-img", "waiting", "waiting for image map base"],
    ]
    assert "more" not in "\n".join(lines)


@pytest.mark.parametrize("width", [80, 60])
def test_a_narrow_terminal_cuts_cause_and_ref_never_the_name_or_the_state(
    tmp_path: Path, width: int
) -> None:
    _, _, found = one_of_each(tmp_path)
    lines = render(found, width=width)
    assert all(len(line) <= width for line in lines)
    assert lines[0].split()[:2] == ["IMAGE", "STATE"]
    starts = [line.split()[:2] for line in lines[1:] if not line.startswith(" ")]
    assert starts == [[r.name, r.state] for r in found]
    ok = next(line for line in lines if line.startswith("ok-img"))
    assert "…" in ok  # its ref, cut to fit on the row's one line


def test_the_live_table_spins_building_rows(tmp_path: Path) -> None:
    _, _, found = one_of_each(tmp_path)
    [line] = [line for line in render(found, live=True) if line.startswith("building-img")]
    assert re.match(f"building-img  {SPINNER} building  changed files: a.txt ", line)
    assert [line for line in render(found) if line.startswith("building-img  building  ")]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.04, "0.0s"),
        (5.5, "5.5s"),
        (59.94, "59.9s"),
        (59.97, "1m00s"),
        (65, "1m05s"),
        (119.6, "2m00s"),
        (3599.6, "1h00m"),
        (7260, "2h01m"),
    ],
)
def test_ages_and_durations_round_to_what_they_show(seconds: float, shown: str) -> None:
    ago = NOW - timedelta(seconds=seconds)
    took = ago - timedelta(seconds=seconds)
    found = [views.Row("app", "ok", "initial build", "app:1", "", "a.yaml", took, ago)]
    [line] = [line for line in render(found) if line.startswith("app")]
    assert line.split()[4:7] == [shown, "ago", shown]


# --- events --------------------------------------------------------------------------------

BUILDING = status.building("spec changed", T0)
OK = status.succeeded(REF, "spec changed", T0, T1)


def test_a_build_that_starts_is_an_event_once() -> None:
    started = {
        "event": "build_started",
        "image": "app",
        "reason": "spec changed",
        "time": "2026-11-26T12:00:00.123456Z",
    }
    assert views.events("app", None, BUILDING) == [started]
    assert views.events("app", OK, BUILDING) == [started]
    assert views.events("app", BUILDING, BUILDING) == []
    again = status.building("manual trigger", T1)
    assert views.events("app", BUILDING, again)[0]["reason"] == "manual trigger"


def test_a_finished_build_has_its_ref_and_duration() -> None:
    assert views.events("app", BUILDING, OK) == [
        {
            "event": "build_finished",
            "image": "app",
            "reason": "spec changed",
            "ref": REF,
            "time": "2026-11-26T12:00:05.623456Z",
            "durationSeconds": 5.5,
        }
    ]


def test_a_failed_build_has_its_error_and_no_ref() -> None:
    failed = status.failed(FAILURE, "spec changed", T0, T1)
    assert views.events("app", BUILDING, failed) == [
        {
            "event": "build_failed",
            "image": "app",
            "reason": "spec changed",
            "error": FAILURE,
            "time": "2026-11-26T12:00:05.623456Z",
            "durationSeconds": 5.5,
        }
    ]


def test_a_cancelled_build_is_its_own_event() -> None:
    error = "build cancelled: its inputs changed while it ran"
    cancelled = status.failed(error, "spec changed", T0, T0)
    assert views.events("app", BUILDING, cancelled) == [
        {
            "event": "build_cancelled",
            "image": "app",
            "reason": "spec changed",
            "error": error,
            "time": "2026-11-26T12:00:00.123456Z",
            "durationSeconds": 0.0,
        }
    ]


def test_an_image_found_up_to_date_says_so_with_its_ref() -> None:
    current = status.succeeded(REF, "up to date", T0, T1)
    assert views.events("app", None, current) == [
        {"event": "up_to_date", "image": "app", "ref": REF, "time": "2026-11-26T12:00:05.623456Z"}
    ]


def test_nothing_new_is_no_event() -> None:
    assert views.events("app", OK, OK) == []
    assert views.events("app", OK, OK.model_copy()) == []
    assert views.events("app", None, status.waiting("waiting for image map base")) == []
    waiting = status.waiting("waiting for cluster other")
    assert views.events("app", status.waiting("waiting for image map base"), waiting) == []
    assert views.events("app", None, models.CmdImageStatus()) == []


def test_a_spec_error_names_the_file_and_no_image(tmp_path: Path) -> None:
    error = f"{tmp_path / 'a.yaml'}:3:1: expected a mapping"
    assert views.spec_error(tmp_path / "a.yaml", error, T0) == {
        "event": "spec_error",
        "file": str(tmp_path / "a.yaml"),
        "error": error,
        "time": "2026-11-26T12:00:00.123456Z",
    }


def test_every_event_and_row_fits_its_schema_and_the_schemas_tell_them_apart(
    tmp_path: Path,
) -> None:
    cancelled = status.failed("build cancelled: cmdimage-watch was stopped", "x", T0, T1)
    made = [
        *views.events("app", None, BUILDING),
        *views.events("app", BUILDING, OK),
        *views.events("app", BUILDING, status.failed(FAILURE, "spec changed", T0, T1)),
        *views.events("app", BUILDING, cancelled),
        *views.events("app", None, status.succeeded(REF, "up to date", T0, T1)),
        views.spec_error(tmp_path / "a.yaml", f"{tmp_path / 'a.yaml'}:3:1: bad", T0),
    ]
    events = schema("events")
    for event in made:
        events.validate(event)
    assert [e["event"] for e in made] == [
        *("build_started", "build_finished", "build_failed", "build_cancelled"),
        *("up_to_date", "spec_error"),
    ]
    assert not events.is_valid(made[3] | {"event": "build_failed"})
    assert not events.is_valid(made[1] | {"time": "2026-11-26 12:00:05"})
    rows = [r.to_json(NOW) for r in one_of_each(tmp_path)[2]]
    schema("status").validate(rows)
    assert not schema("status").is_valid([rows[0] | {"state": "ok"}])


# --- the graph -----------------------------------------------------------------------------


def small_graph(tmp_path: Path) -> tuple[Index, list[views.Row]]:
    """base <- app -> tools (an ImageMap declared by hand) <- lib; bad is invalid."""
    spec = write(
        tmp_path / "a.yaml",
        cmdimage("base"),
        cmdimage("app", imageMaps=["base", "tools"]),
        cmdimage("lib", imageMaps=["tools"]),
        cmdimage("bad", BAD_REF),
        imagemap("tools", status={"image": "tools:1", "imageFromLocal": "tools:1"}),
    )
    index = index_of(spec)
    state = status.State()
    state.images["base"] = status.succeeded("base:tilt-1", "initial build", T0, T1)
    state.images["app"] = status.building("image map base updated", T1)
    state.images["lib"] = status.failed("boom", "initial build", T0, T1)
    return index, views.rows(index, state, tmp_path)


def test_edges_name_the_publisher_or_the_declared_image_map(tmp_path: Path) -> None:
    index, _ = small_graph(tmp_path)
    assert views.edges(index) == [
        ("base", "app", "base"),
        ("imagemap:tools", "app", "tools"),
        ("imagemap:tools", "lib", "tools"),
    ]


def test_dot(tmp_path: Path) -> None:
    assert views.dot(*small_graph(tmp_path)) == (
        "digraph images {\n"
        "  rankdir=LR;\n"
        "  node [shape=box, style=rounded];\n"
        '  "app" [label="app\\nbuilding", color=orange];\n'
        '  "bad" [label="bad\\ninvalid", color=red];\n'
        '  "base" [label="base\\nok", color=green];\n'
        '  "lib" [label="lib\\nfailed", color=red];\n'
        '  "base" -> "app" [label="base"];\n'
        '  "imagemap:tools" -> "app" [label="tools"];\n'
        '  "imagemap:tools" -> "lib" [label="tools"];\n'
        "}\n"
    )


def test_mermaid(tmp_path: Path) -> None:
    assert views.mermaid(*small_graph(tmp_path)) == (
        "graph LR\n"
        '  n0["app<br/>building"]:::building\n'
        '  n1["bad<br/>invalid"]:::invalid\n'
        '  n2["base<br/>ok"]:::ok\n'
        '  n3["lib<br/>failed"]:::failed\n'
        "  n2 -->|base| n0\n"
        '  x4(["imagemap:tools"]) -->|tools| n0\n'
        "  x4 -->|tools| n3\n"
        "  classDef ok stroke:#2a2\n"
        "  classDef failed stroke:#c22\n"
        "  classDef building stroke:#ca2\n"
        "  classDef waiting stroke:#26c\n"
        "  classDef invalid stroke:#c22\n"
        "  classDef pending stroke:#999\n"
    )


def test_each_name_has_its_own_colour_the_same_on_every_run() -> None:
    # crc32, not hash(): str hashes change from one process to the next
    assert [views.colour(n) for n in ("sample-app", "sample-base", "sample-tool", "app")] == [
        "bright_yellow",
        "bright_blue",
        "blue",
        "bright_green",
    ]
    assert all(views.colour(f"img-{i}") in views.COLOURS for i in range(50))
