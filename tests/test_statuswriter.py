"""Status files never change under a running build's folder, and keep the order of events."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cmdimage_watch import project, status
from cmdimage_watch.statusfiles import StatusCache, status_path
from cmdimage_watch.statuswriter import StatusWriter
from tests.helpers import cmdimage, index_of, write

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    """`outer` builds the whole tree; `inner`'s spec file lies inside that build's folder."""
    outer = write(tmp_path / "outer.yaml", cmdimage("outer"))
    inner = write(tmp_path / "sub" / "inner.yaml", cmdimage("inner"))
    return outer, inner


def test_a_starting_build_writes_its_own_status_before_its_command_runs(tmp_path: Path) -> None:
    outer, inner = _tree(tmp_path)
    index, state = index_of(outer, inner), status.State()
    writer = StatusWriter(lambda: index, lambda: state)
    state.images["outer"] = status.building("initial build", T0)
    writer.changed(["outer"])  # no flush yet: written all the same
    assert "building" in status_path(outer).read_text()
    assert not writer.pending


def test_files_under_a_building_folder_wait_for_that_build(tmp_path: Path) -> None:
    outer, inner = _tree(tmp_path)
    index, state = index_of(outer, inner), status.State()
    writer = StatusWriter(lambda: index, lambda: state)
    state.images["outer"] = status.building("initial build", T0)
    writer.write(["outer"])
    state.images["inner"] = status.succeeded("inner:tilt-1", "initial build", T0, T0)
    writer.write(["inner"])
    assert not status_path(inner).exists()  # `docker build` of outer is reading sub/ now
    assert writer.pending
    state.images["outer"] = status.succeeded("outer:tilt-2", "initial build", T0, T0)
    writer.write(["outer"])
    assert "inner:tilt-1" in status_path(inner).read_text()
    assert "outer:tilt-2" in status_path(outer).read_text()
    assert not writer.pending


def test_a_build_gone_with_its_spec_holds_no_folder(tmp_path: Path) -> None:
    outer, inner = _tree(tmp_path)
    index, state = index_of(outer, inner), status.State()
    writer = StatusWriter(lambda: index, lambda: state)
    state.images["outer"] = status.building("initial build", T0)
    writer.write(["outer"])
    del state.images["outer"]  # its spec file was deleted mid-build
    state.images["inner"] = status.succeeded("inner:tilt-1", "initial build", T0, T0)
    writer.write(["inner"])
    assert "inner:tilt-1" in status_path(inner).read_text()


def test_a_status_file_that_could_not_be_written_is_tried_again_at_the_next_change(
    tmp_path: Path,
) -> None:
    """§7 "disk full, status folder read-only: logged; retried on the next change". A folder
    in the status file's place fails the write even for root, as a full disk would."""
    outer, inner = _tree(tmp_path)
    index, state = index_of(outer, inner), status.State()
    writer = StatusWriter(lambda: index, lambda: state)
    status_path(inner).mkdir()
    state.images["inner"] = status.succeeded("inner:tilt-1", "initial build", T0, T0)
    writer.write(["inner"])
    assert status_path(inner).is_dir()
    status_path(inner).rmdir()  # space again
    state.images["outer"] = status.succeeded("outer:tilt-1", "initial build", T0, T0)
    writer.write(["outer"])  # a change elsewhere
    assert "inner:tilt-1" in status_path(inner).read_text()
    assert not writer.pending


def test_many_files_at_once_are_all_written_and_a_failure_among_them_is_kept(
    tmp_path: Path,
) -> None:
    """A start-up confirms a thousand images at once: past PARALLEL_FROM files, writes run
    on several threads, and what failed there is tried again like any failure."""
    specs = [write(tmp_path / f"i{n}" / "s.yaml", cmdimage(f"i{n}")) for n in range(40)]
    index, state = index_of(*specs), status.State()
    writer = StatusWriter(lambda: index, lambda: state)
    status_path(specs[7]).mkdir()  # this one cannot be written
    for n in range(40):
        state.images[f"i{n}"] = status.succeeded(f"i{n}:tilt-1", "up to date", T0, T0)
    writer.write([f"i{n}" for n in range(40)])
    for n, spec in enumerate(specs):
        if n != 7:
            assert f"i{n}:tilt-1" in status_path(spec).read_text()
    status_path(specs[7]).rmdir()
    writer.write([])  # the next change, of nothing of its own
    assert "i7:tilt-1" in status_path(specs[7]).read_text()


def test_a_build_inside_a_building_folder_shows_its_start_and_end_at_once(
    tmp_path: Path,
) -> None:
    """Issue 13 §1: a done image must not show `building` until the slowest build of its
    batch ends; `wait` on it would time out."""
    outer, inner = _tree(tmp_path)
    index, state = index_of(outer, inner), status.State()
    writer = StatusWriter(lambda: index, lambda: state)
    state.images["outer"] = status.building("initial build", T0)
    writer.changed(["outer"])
    state.images["inner"] = status.building("initial build", T0)
    writer.changed(["inner"])
    assert "building" in status_path(inner).read_text()
    state.images["inner"] = status.succeeded("inner:tilt-1", "initial build", T0, T0)
    writer.changed(["inner"])  # outer still builds: inner's end is written all the same
    assert "inner:tilt-1" in status_path(inner).read_text()
    assert not writer.pending


def test_documents_a_file_holds_already_are_not_rendered_or_written_again(tmp_path: Path) -> None:
    """A start with nothing to build confirms a thousand images "up to date": the files that
    say so already (as read at start) are left alone, and one that changed is written."""
    outer, inner = _tree(tmp_path)
    index, state = index_of(outer, inner), status.State()
    state.images["outer"] = status.succeeded("outer:tilt-1", "up to date", T0, T0)
    state.images["inner"] = status.succeeded("inner:tilt-1", "up to date", T0, T0)
    StatusWriter(lambda: index, lambda: state).write(["outer", "inner"])
    os.utime(status_path(outer), ns=(1, 1))
    os.utime(status_path(inner), ns=(1, 1))
    cache = StatusCache()
    state, _ = project.read_state(index, tmp_path / ".cmdimage-watch", cache)  # the next start
    writer = StatusWriter(lambda: index, lambda: state, cache)
    state.images["inner"] = status.succeeded("inner:tilt-2", "changed files: a", T0, T0)
    writer.write_all(tmp_path)
    assert status_path(outer).stat().st_mtime_ns == 1  # held it already: not touched
    assert "inner:tilt-2" in status_path(inner).read_text()


def test_a_building_status_skips_the_fsync_and_the_end_of_the_build_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`building` is on disk before the command starts but is replaced when it ends: the
    fsync (on the way of every save to its build) is kept for the status that stays."""
    outer, inner = _tree(tmp_path)
    index, state = index_of(outer, inner), status.State()
    writer = StatusWriter(lambda: index, lambda: state)
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    state.images["outer"] = status.building("initial build", T0)
    writer.changed(["outer"])
    assert "building" in status_path(outer).read_text()
    assert synced == []
    state.images["outer"] = status.succeeded("outer:tilt-1", "initial build", T0, T0)
    writer.changed(["outer"])
    assert "outer:tilt-1" in status_path(outer).read_text()
    assert len(synced) == 1
