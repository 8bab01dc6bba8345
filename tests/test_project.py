"""Which spec files a batch of changed paths touches (the daemon re-reads those)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cmdimage_watch import project, sources
from cmdimage_watch.project import is_spec_candidate, spec_files_touched, walk
from tests.helpers import cmdimage, write


def test_a_file_event_under_a_moved_away_folder_touches_the_specs_that_were_in_it(
    tmp_path: Path,
) -> None:
    """`mv moved renamed; echo x > renamed/src.txt`: the old folder's watch can report the
    write as moved/src.txt before the rename reaches the daemon. The specs that were in
    moved/ must be read again (they are gone), or their image builds in a folder that is not
    there."""
    root = tmp_path / "tree"
    (root / "renamed" / "deep").mkdir(parents=True)
    (root / "kept").mkdir()
    known = [
        root / "moved" / "a.yaml",
        root / "moved" / "deep" / "b.yaml",
        root / "kept" / "c.yaml",
    ]
    stale = {root / "moved" / "deep" / "src.txt"}
    assert spec_files_touched(stale, known, root) == set(known[:2])


def test_a_folder_that_came_is_walked_and_one_that_went_drops_its_specs(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    came = root / "came"
    (came / ".hidden").mkdir(parents=True)
    (came / "x.yaml").write_text("")
    (came / "x.status.yaml").write_text("")
    (came / ".hidden" / "y.yaml").write_text("")
    (came / "src.txt").write_text("")
    known = [root / "went" / "z.yaml", root / "here.yaml"]
    assert spec_files_touched({came, root / "went"}, known, root) == {came / "x.yaml", known[0]}


def test_a_deleted_source_file_touches_no_spec(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "app").mkdir(parents=True)
    known = [root / "app" / "app.yaml"]
    assert spec_files_touched({root / "app" / "gone.txt"}, known, root) == set()
    assert spec_files_touched({root / "app" / "app.yaml"}, known, root) == set(known)


@pytest.mark.parametrize(
    ("name", "candidate"),
    [
        ("app.yaml", True),
        ("app.yml", True),
        ("app.status.yaml", False),
        ("app.status.yml", False),
        ("app.json", False),
        (".hidden/app.yaml", False),
        ("sub/.git/app.yaml", False),
        (".app.yaml", True),  # a hidden *file* is a file like any other
        (".yaml", False),  # no name, no suffix: pathlib's view, and ours
        (".#app.yaml", False),  # emacs lock
        ("#app.yaml#", False),  # emacs autosave
        ("app.yaml~", False),  # vim backup
        ("app.yaml___jb_tmp___", False),  # JetBrains safe write
        ("app.yaml___jb_old___", False),
    ],
)
def test_which_files_are_read_as_specs(tmp_path: Path, name: str, candidate: bool) -> None:
    assert is_spec_candidate(tmp_path / name, tmp_path) is candidate


def test_one_walk_finds_the_spec_and_status_files_as_is_spec_candidate_says(
    tmp_path: Path,
) -> None:
    names = ["a.yaml", "b.yml", ".yaml", "c.status.yaml", "d.yaml~", ".#e.yaml", "f.txt"]
    for name in [*names, ".git/g.yaml", "sub/h.yaml"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    specs, statuses = walk(tmp_path)
    expected = sorted(p for p in tmp_path.rglob("*") if is_spec_candidate(p, tmp_path))
    assert sorted(specs) == expected
    assert [p.relative_to(tmp_path).as_posix() for p in specs] == ["a.yaml", "b.yml", "sub/h.yaml"]
    assert statuses == [tmp_path / "c.status.yaml"]


def test_a_dependency_cycle_is_listed_at_each_member_s_image_maps(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", cmdimage("a", imageMaps=["b"]))
    b = write(tmp_path / "b.yaml", cmdimage("b", imageMaps=["a"]))
    cycle = "dependency cycle: a -> b -> a; none of these builds"
    column = a.read_text().index('"imageMaps"') + 1
    assert project.problems(project.load(tmp_path)) == [
        f"{a}:1:{column}: spec.imageMaps: {cycle}",
        f"{b}:1:{column}: spec.imageMaps: {cycle}",
    ]


def test_content_hashes_unchanged_since_loaded_are_not_written_again(tmp_path: Path) -> None:
    """A start that found every source as the last run left it writes no hashes.json (its
    encoding held the loop for a tenth of a second at 20,000 files); a change is written."""
    source = write(tmp_path / "src" / "a.txt", "a\n")
    state = tmp_path / "state"
    first = sources.HashCache()
    first.hash(source)
    first.racy.clear()  # as if saved long after the file was written
    project.write_hashes(state, first)
    saved = state / "hashes.json"
    os.utime(saved, ns=(1, 1))
    again = project.read_hashes(state)
    assert again.hash(source) is not None and again.reads == 0
    project.write_hashes(state, again)
    assert saved.stat().st_mtime_ns == 1  # the same: not written
    write(source, "changed\n")
    os.utime(source, ns=(10**18, 10**18))  # not racy
    again.hash(source)
    project.write_hashes(state, again)
    assert saved.stat().st_mtime_ns != 1
    assert project.read_hashes(state).entries[str(source)][2] == again.entries[str(source)][2]
