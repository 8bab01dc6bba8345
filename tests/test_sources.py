"""Source sets, ignore rules, lazy content hashes and change reasons."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from cmdimage_watch import sources
from cmdimage_watch.sources import HashCache, Inputs, change_reason, dockerignore_lines
from tests.helpers import cmdimage, filewatch, index_of, write


def _files(tmp_path: Path, *names: str) -> None:
    for name in names:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)


def _rel(tmp_path: Path, paths: Sequence[str | Path]) -> list[str]:
    return [Path(p).relative_to(tmp_path).as_posix() for p in paths]


def test_build_dir_minus_dockerignore_and_never_sources(tmp_path: Path) -> None:
    _files(
        tmp_path,
        "src/main.go",
        "src/main.go~",
        "src/.main.go.swp",
        "src/4913",
        "src/#x#",
        "node_modules/dep/index.js",
        "src/node_modules/kept.js",
        ".git/HEAD",
        "out/ref.txt",
        "notes.md",
        "other.status.yaml",
    )
    (tmp_path / ".dockerignore").write_text("# build output\n/node_modules\n*.md\n")
    spec = write(tmp_path / "app.yaml", cmdimage("app", outputsImageRefTo="out/ref.txt"))
    index = index_of(spec)
    found = sources.source_texts(index.images["app"], index)
    # docker anchors patterns at the context root: src/node_modules stays a source; hidden
    # files are sent to docker (.dockerignore among them), hidden folders are not ours
    assert _rel(tmp_path, found) == [".dockerignore", "src/main.go", "src/node_modules/kept.js"]


def test_ignored_folders_are_pruned_before_they_are_entered(tmp_path: Path) -> None:
    _files(tmp_path, "big/a.bin", "keep/b.txt")
    (tmp_path / ".dockerignore").write_text("big\n")
    spec = write(tmp_path / "app.yaml", cmdimage("app"))
    index = index_of(spec)
    walked: list[str] = []
    real_walk = os.walk

    def spying_walk(top: Path) -> object:
        for folder, dirs, files in real_walk(top):
            walked.append(Path(folder).relative_to(tmp_path).as_posix())
            yield folder, dirs, files

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "walk", spying_walk)
        found = sources.source_texts(index.images["app"], index)
    assert _rel(tmp_path, found) == [".dockerignore", "keep/b.txt"]
    assert walked == [".", "keep"]


def test_folders_every_image_ignores_are_not_watched_unless_a_spec_lives_there(
    tmp_path: Path,
) -> None:
    """What the daemon hands the watcher: `node_modules` (ignored by the one image that
    covers it) and hidden folders are left out; `docs` holds a spec file, so it stays."""
    _files(tmp_path, "node_modules/dep/x.js", "src/a.go", ".git/HEAD", "docs/notes.md")
    (tmp_path / ".dockerignore").write_text("node_modules\ndocs\n")
    spec = write(tmp_path / "app.yaml", cmdimage("app"))
    doc_spec = write(tmp_path / "docs" / "more.yaml", cmdimage("more", dir="../src"))
    index = index_of(spec, doc_spec)
    roots = [r for name in ("app", "more") for r in sources.roots(index.images[name], index)]
    found = sources.watched_folders(tmp_path, roots, keep={doc_spec.parent})
    assert sorted(_rel(tmp_path, found)) == [".", "docs", "src"]


def test_dockerignore_negation_and_cleaning() -> None:
    assert dockerignore_lines(["", "# c", "./a/../b", "!keep.md", "/x/"]) == [
        "/b",
        "!/keep.md",
        "/x",
    ]


def test_filewatch_named_after_the_image_map_decides_sources(tmp_path: Path) -> None:
    _files(tmp_path, "api/a.py", "api/gen/x.py", "shared/s.py", "unrelated/u.py")
    spec = write(
        tmp_path / "app.yaml",
        cmdimage("app", "gcr.io/me/app"),
        filewatch(
            "image:gcr.io_me_app",
            watchedPaths=["api", "shared/s.py"],
            ignores=[{"basePath": "api", "patterns": ["gen"]}],
        ),
    )
    index = index_of(spec)
    found = sources.source_texts(index.images["app"], index)
    assert _rel(tmp_path, found) == ["api/a.py", "shared/s.py"]


def test_filewatch_with_no_paths_turns_source_watching_off(tmp_path: Path) -> None:
    _files(tmp_path, "a.txt")
    spec = write(tmp_path / "app.yaml", cmdimage("app"), filewatch("image:app"))
    index = index_of(spec)
    assert sources.source_texts(index.images["app"], index) == []


HOUR_AGO = time.time_ns() - 3600 * 10**9


def test_hashes_are_by_content_and_read_again_only_on_size_or_mtime_change(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f"
    path.write_text("one")
    os.utime(path, ns=(HOUR_AGO, HOUR_AGO))  # a file at rest
    cache = HashCache()
    first = cache.hash(path)
    assert cache.hash(path) == first
    assert cache.reads == 1
    os.utime(path, ns=(1, 1))  # an mtime-only touch: read again, same hash
    assert cache.hash(path) == first
    assert cache.reads == 2
    path.write_text("two")
    assert cache.hash(path) != first
    assert cache.hash(tmp_path / "missing") is None


def test_a_file_saved_just_now_is_read_again_when_a_batch_names_it(tmp_path: Path) -> None:
    """Two saves of the same size in one tick of the file's clock (a second, polling over
    NFS) leave size and mtime as they were: a hash taken within RACY_NS of the mtime serves
    until a batch names the file, and is never kept for the next run."""
    path = tmp_path / "f"
    path.write_text("one")
    cache = HashCache()
    first = cache.hash(path)
    assert cache.hash(path) == first
    assert cache.reads == 1  # asked twice, read once
    stat = path.stat()
    path.write_text("two")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the same tick
    cache.changed([tmp_path / "other", path])  # the batch of that save
    assert cache.hash(path) != first
    assert cache.reads == 2
    assert str(path) not in HashCache.from_json(cache.to_json()).entries


def test_hashes_are_kept_between_runs_for_the_files_this_run_saw(tmp_path: Path) -> None:
    kept, unseen = tmp_path / "kept", tmp_path / "unseen"
    kept.write_text("one")
    unseen.write_text("two")
    os.utime(kept, ns=(HOUR_AGO, HOUR_AGO))
    earlier = {"version": 1, "entries": {str(unseen): [3, 1, "stale"]}}  # of an earlier run
    cache = HashCache.from_json(json.dumps(earlier))
    first = cache.hash(kept)
    again = HashCache.from_json(cache.to_json())
    assert again.entries == {str(kept): cache.entries[str(kept)]}  # `unseen` was not asked for
    assert again.hash(kept) == first
    assert again.reads == 0  # same size and mtime: not read
    assert HashCache.from_json("{not json").entries == {}
    assert HashCache.from_json('{"version": 0, "entries": {}}').entries == {}


def _inputs(**changes: object) -> Inputs:
    base: dict[str, object] = {
        "spec": {"ref": "app"},
        "dir": ".",  # relative to the spec file: the same on every machine
        "image_maps": [("base", "base:tilt-1")],
        "cluster": None,
        "sources": {"a.go": "1", "b.go": "2"},
    }
    base.update(changes)
    return Inputs(**base)  # type: ignore[arg-type]


def test_change_reasons_name_the_cause() -> None:
    old = _inputs()
    assert change_reason(None, old) == "initial build"
    assert change_reason(old, _inputs()) == ""
    assert change_reason(old, _inputs(spec={"ref": "app2"})) == "spec changed"
    assert change_reason(old, _inputs(cluster={"x": 1})) == "cluster default changed"
    dev = {"ref": "app", "cluster": "dev"}
    assert change_reason(_inputs(spec=dev), _inputs(spec=dev, cluster={"x": 1})) == (
        "cluster dev changed"
    )
    assert (
        change_reason(old, _inputs(image_maps=[("base", "base:tilt-2")]))
        == "image map base updated"
    )
    changed = {"a.go": "9", "c.go": "3", "d.go": "4", "e.go": "5"}
    assert change_reason(old, _inputs(sources=changed)) == (
        "changed files: a.go, b.go, c.go (+2 more)"
    )
    older = _inputs(dir="/home/me/src/app")  # recorded before dirs were relative
    assert change_reason(older, old) == "inputs recorded by an older cmdimage-watch"


def test_digest_is_stable_and_round_trips_through_json() -> None:
    one = _inputs()
    assert one.digest() == _inputs().digest()
    assert one.digest() != _inputs(sources={"a.go": "1"}).digest()
    again = Inputs.from_json(one.to_json())
    assert again == one
    assert Inputs.from_json("{not json") is None


def test_the_kernel_s_filesystems_are_never_sources_nor_entered() -> None:
    assert Path("/proc") in sources.pseudo_mounts()
    assert Path("/sys") in sources.pseudo_mounts()
    assert not sources.enterable(Path("/"), "proc")
    assert sources.enterable(Path("/"), "usr")
    root = sources.Root(Path("/proc"), ())
    assert list(sources.walk(root, lambda path, name: False)) == []  # /proc/kcore never ends
