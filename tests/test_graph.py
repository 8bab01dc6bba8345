"""The object index: duplicates, publication, dependency order, cycles, hints."""

from __future__ import annotations

import itertools
from pathlib import Path

from cmdimage_watch.graph import find_cycles, topological_order
from tests.helpers import cmdimage, imagemap, index_of, write


def test_images_publish_sanitized_familiar_names(tmp_path: Path) -> None:
    spec = write(
        tmp_path / "a.yaml",
        cmdimage("bar", "gcr.io/foo/bar"),
        cmdimage("base", "base"),
        cmdimage("hub", "docker.io/library/hub"),
    )
    index = index_of(spec)
    assert index.publishers == {"gcr.io_foo_bar": "bar", "base": "base", "hub": "hub"}


def test_relative_dir_and_ref_file_resolve_against_the_spec_folder(tmp_path: Path) -> None:
    spec = write(
        tmp_path / "sub" / "a.yaml",
        cmdimage("a", dir="../src", outputsImageRefTo="out/ref.txt"),
        cmdimage("b"),
    )
    index = index_of(spec)
    assert index.images["a"].dir == tmp_path / "src"
    assert index.images["a"].outputs_ref_to == tmp_path / "sub" / "out/ref.txt"
    assert index.images["b"].dir == tmp_path / "sub"


def test_duplicate_names_are_errors_on_both_naming_the_other(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", cmdimage("app"))
    b = write(tmp_path / "b.yaml", cmdimage("app", "other"))
    index = index_of(a, b)
    assert "app" not in index.images
    entry_a = index.files[a].entries[0]
    entry_b = index.files[b].entries[0]
    assert index.problem(entry_a) == (
        f"invalid spec: {a}:1:1: metadata.name: CmdImage app is also defined in {b}:1:1; "
        "names must be unique per kind"
    )
    assert f"is also defined in {a}:1:1" in index.problem(entry_b)


def test_same_name_in_different_kinds_is_fine(tmp_path: Path) -> None:
    spec = write(tmp_path / "a.yaml", cmdimage("base"), imagemap("base"))
    index = index_of(spec)
    assert "base" in index.images
    assert "base" in index.image_maps
    assert not index.problems


def test_two_images_publishing_one_map_are_both_refused(tmp_path: Path) -> None:
    spec = write(tmp_path / "a.yaml", cmdimage("one", "same"), cmdimage("two", "same:v2"))
    index = index_of(spec)
    # tags are part of the familiar name, so these two publish different maps
    assert index.publishers == {"same": "one", "same:v2": "two"}
    spec = write(tmp_path / "b.yaml", cmdimage("one", "same"), cmdimage("two", "same"))
    index = index_of(spec)
    assert index.images == {}
    assert all("publishes image map same, as does" in p for p in index.problems.values())


def test_dependency_order_puts_bases_first(tmp_path: Path) -> None:
    spec = write(
        tmp_path / "a.yaml",
        cmdimage("app", imageMaps=["mid"]),
        cmdimage("mid", imageMaps=["base"]),
        cmdimage("base"),
        cmdimage("other"),
    )
    index = index_of(spec)
    assert topological_order(index, index.images) == ["base", "mid", "app", "other"]
    assert topological_order(index, ["app"]) == ["app"]
    assert index.deps("app") == ["mid"]
    assert index.dependents("base") == ["mid"]


def test_cycles_are_reported_on_every_member_and_block_them(tmp_path: Path) -> None:
    spec = write(
        tmp_path / "a.yaml",
        cmdimage("a", imageMaps=["b"]),
        cmdimage("b", imageMaps=["c"]),
        cmdimage("c", imageMaps=["a"]),
        cmdimage("d", imageMaps=["a"]),
    )
    index = index_of(spec)
    assert find_cycles(index) == [["a", "b", "c"]]
    for name in "abc":
        assert index.blocked(name) == "dependency cycle: a -> b -> c -> a; none of these builds"
    assert index.blocked("d") == ""


def test_unknown_image_map_gets_a_did_you_mean_hint(tmp_path: Path) -> None:
    bar = write(tmp_path / "images" / "bar.yaml", cmdimage("bar", "gcr.io/foo/bar"))
    app = write(tmp_path / "app.yaml", cmdimage("app", imageMaps=["gcr.io_foo_baz"]))
    index = index_of(bar, app)
    assert index.unknown_map_reason("gcr.io_foo_baz") == (
        "waiting for image map gcr.io_foo_baz: no CmdImage publishes it and no ImageMap "
        f"declares it; did you mean gcr.io_foo_bar (published by CmdImage bar in {bar})?"
    )
    assert index.unknown_map_reason("zzz").endswith("no ImageMap declares it")


def test_hint_can_name_a_declared_image_map(tmp_path: Path) -> None:
    spec = write(tmp_path / "a.yaml", imagemap("external-db"))
    index = index_of(spec)
    assert index.unknown_map_reason("external-dv").endswith(
        f"did you mean external-db (declared in {spec}:1:1)?"
    )


def test_every_image_on_some_cycle_is_blocked(tmp_path: Path) -> None:
    spec = write(
        tmp_path / "a.yaml",
        cmdimage("a", imageMaps=["b", "c"]),
        cmdimage("b", imageMaps=["a"]),
        cmdimage("c", imageMaps=["b"]),
        cmdimage("self", imageMaps=["self"]),
    )
    index = index_of(spec)
    assert find_cycles(index) == [["a", "b", "c"], ["self"]]
    assert index.blocked("c") == (
        "dependency cycle: a -> b -> a (and through c); none of these builds"
    )
    assert index.blocked("self") == "dependency cycle: self -> self; none of these builds"


def test_long_chains_need_no_recursion(tmp_path: Path) -> None:
    names = [f"i{n:04d}" for n in range(3000)]
    docs = [cmdimage(names[0])] + [
        cmdimage(name, imageMaps=[before]) for before, name in itertools.pairwise(names)
    ]
    index = index_of(write(tmp_path / "chain.yaml", *docs))
    assert find_cycles(index) == []
    assert topological_order(index, reversed(names)) == names
