"""The spec cache gives back exactly what parsing gave, and only for the same bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cmdimage_watch import specfiles
from cmdimage_watch.speccache import SpecCache
from tests.helpers import cluster, cmdimage, imagemap, write


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    parsed: list[Path] = []
    real = specfiles._load

    def load(path: Path, data: bytes, size: int) -> specfiles.SpecFile:
        parsed.append(path)
        return real(path, data, size)

    monkeypatch.setattr(specfiles, "_load", load)
    return parsed


def test_a_second_start_parses_nothing_and_gets_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write(
        tmp_path / "a.yaml",
        cmdimage("app", "gcr.io/me/app", env=["A=1"], imageMaps=["db"]),
        imagemap("db", status={"image": "db:1", "imageFromLocal": "db:1"}),
        cluster(defaultRegistry={"host": "localhost:5000"}),
        cmdimage("bad", args=[]),
    )
    store = tmp_path / "state" / "specs.json"
    parsed = _spy(monkeypatch)
    first = SpecCache(store)
    loaded = specfiles.load_spec_file(spec, first)
    first.save()
    again = specfiles.load_spec_file(spec, SpecCache(store))
    assert parsed == [spec]
    assert again == loaded
    assert again.entries[-1].error.startswith(f"invalid spec: {spec}:")


def test_changed_bytes_or_another_loader_parse_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write(tmp_path / "a.yaml", cmdimage("app"))
    store = tmp_path / "specs.json"
    parsed = _spy(monkeypatch)
    cache = SpecCache(store)
    specfiles.load_spec_file(spec, cache)
    cache.save()
    write(spec, cmdimage("app", "other"))
    cache = SpecCache(store)
    changed = specfiles.load_spec_file(spec, cache)
    cache.save()
    assert specfiles.load_spec_file(spec, SpecCache(store)) == changed  # from the cache
    assert changed.entries[0].obj is not None
    assert changed.entries[0].obj.spec.ref == "other"  # type: ignore[union-attr]
    saved = json.loads(store.read_text())
    store.write_text(json.dumps({**saved, "version": "from another loader"}))
    specfiles.load_spec_file(spec, SpecCache(store))
    assert parsed == [spec, spec, spec]
