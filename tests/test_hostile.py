"""Hostile input at scale (SPEC §7): valid-looking trees, mutated, through every reader.

Generated objects of every kind get a field replaced by something hostile (null, numbers,
lists, maps, huge or deeply nested values, names with `../`, `/`, `%`, unicode or 300
characters), and their text gets YAML's sharp edges (tags, aliases and merge keys,
duplicate keys, BOMs, tabs, NUL and non-UTF-8 bytes, binary junk, many documents, none, a
file over 1 MiB). In-process, each case goes through the loader, the index, `validate`'s
listing and the status file's rendering: nothing raises, every problem names file, line
and column, the status file reads back, and memory stays bounded. Then the real commands
and a running daemon get whole trees of such files: exit codes are 0, 1 or 2 only,
nothing hangs, no traceback.

`CIW_HOSTILE_EXAMPLES` sets the in-process cases per generator (default 5,000; two
generators, so 10,000 in all); `CIW_HOSTILE_EXAMPLES=100000 scripts/test tests/test_hostile.py`
is the long run.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from cmdimage_watch import project, status, statusfiles
from cmdimage_watch.graph import build_index
from cmdimage_watch.specfiles import load_spec_file
from tests.daemon_harness import Watchers, cli
from tests.helpers import cmdimage
from tests.helpers.polling import wait_until
from tests.helpers.tree import Tree
from tests.test_specfiles import FILE_CONTENTS

EXAMPLES = int(os.environ.get("CIW_HOSTILE_EXAMPLES", "5000"))
LOCATED = re.compile(r"^.+\.ya?ml:[1-9]\d*:[1-9]\d*: .")
API = "tilt.dev/v1alpha1"

# --- valid-looking objects ------------------------------------------------------------------

NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True)


def _objects(name: str) -> list[dict[str, Any]]:
    meta = {"name": name, "labels": {"app": name}}
    return [
        {
            "apiVersion": API,
            "kind": "CmdImage",
            "metadata": meta,
            "spec": {
                "ref": f"localhost:5000/{name}",
                "args": ["true"],
                "dir": ".",
                "env": ["A=1"],
                "imageMaps": [f"{name}-base"],
                "outputMode": "remote",
                "outputTag": "dev",
                "cluster": "default",
                "clusterNeeds": "push",
            },
        },
        {
            "apiVersion": API,
            "kind": "ImageMap",
            "metadata": meta,
            "spec": {"selector": name},
            "status": {"image": f"{name}:v1", "buildStartTime": "2024-05-02T09:13:58Z"},
        },
        {
            "apiVersion": API,
            "kind": "FileWatch",
            "metadata": {"name": f"image:{name}"},
            "spec": {"watchedPaths": ["src"], "ignores": [{"basePath": ".", "patterns": ["*.o"]}]},
        },
        {
            "apiVersion": API,
            "kind": "Cluster",
            "metadata": meta,
            "spec": {
                "defaultRegistry": {"host": "localhost:5000", "singleName": name},
                "connection": {"docker": {"host": "unix:///nowhere.sock"}},
            },
        },
    ]


HOSTILE_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["../x", "/", "%2F", "..", ".", "a/b", "ünï", "x" * 300, "a\nb", "", " "]),
    st.just("y" * 200_000),  # a huge value
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.integers(50, 150).map(lambda depth: json.loads("[" * depth + "]" * depth)),
)


def _paths(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, (*at, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _paths(inner, (*at, i))


def _replace(value: Any, at: tuple[Any, ...], new: Any) -> Any:
    if not at:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[at[0]] = _replace(value[at[0]], at[1:], new)
    return copy


@st.composite
def hostile_objects(draw: st.DrawFn) -> list[dict[str, Any]]:
    name = draw(NAMES)
    objects = draw(st.lists(st.sampled_from(_objects(name)), min_size=1, max_size=3))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(objects) - 1))
        at = draw(st.sampled_from(list(_paths(objects[i]))))
        objects[i] = _replace(objects[i], at, draw(HOSTILE_VALUES))
    if draw(st.booleans()):  # inside a List, as `tilt get -o yaml` prints them
        kind = draw(st.sampled_from(["List", "CmdImageList", "ImageMapList"]))
        api = "v1" if kind == "List" else API
        items: Any = draw(st.one_of(st.just(objects), HOSTILE_VALUES))
        objects = [{"apiVersion": api, "kind": kind, "items": items}]
    return objects


# YAML's sharp edges, around the text of the documents
EDGES = [
    lambda t: t,
    lambda t: "\ufeff" + t,  # a BOM
    lambda t: t.replace("\n", "\n\t", 1),  # a tab
    lambda t: t + "\n---\n" + t,  # the same objects twice: duplicates
    lambda t: t + "\n---\n\n---\n",  # empty documents
    lambda t: "",
    lambda t: t.replace('"kind"', '"kind": "CmdImage", "kind"', 1),  # a duplicate key
    lambda t: "!!python/object/apply:os.system [echo pwned]\n",
    lambda t: t.replace('"spec"', '"spec": !!python/name:os.system ""\n, "x"', 1),
    lambda t: "a: &a [x, x]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\n---\n" + t,
    lambda t: "base: &base {apiVersion: tilt.dev/v1alpha1}\n---\n{<<: {kind: CmdImage}, a: 1}\n",
    lambda t: t + "\x00",
    lambda t: t + "# " + "z" * (1024 * 1024),  # over 1 MiB
]


@st.composite
def hostile_texts(draw: st.DrawFn) -> bytes:
    documents = draw(hostile_objects())
    text = "\n---\n".join(json.dumps(d, ensure_ascii=draw(st.booleans())) for d in documents)
    data = draw(st.sampled_from(EDGES))(text).encode("utf-8")
    if draw(st.integers(0, 9)) == 0:
        data += b"\xff\xfe not utf-8"
    return bytes(data)


# --- every reader on one file ---------------------------------------------------------------


def check_one(content: bytes) -> None:
    """Load, index, list and render one file: nothing raises, every problem is located, and
    the status file reads back."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spec.yaml"
        path.write_bytes(content)
        loaded = load_spec_file(path)
        index = build_index([loaded] if loaded.is_spec else [])
        for problem in project.problems(index):
            assert LOCATED.match(problem), problem
        if not loaded.is_spec:
            return
        text = statusfiles.render_status(path, status.documents(loaded, index, status.State()))
        target = statusfiles.status_path(path)
        statusfiles.write_if_changed(target, text)
        assert len(statusfiles.read_status_file(target)) >= len(loaded.entries)


HOSTILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    # the default run is the same 10,000 cases each time (CI stays reproducible); a run
    # that sets CIW_HOSTILE_EXAMPLES draws new ones
    derandomize="CIW_HOSTILE_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.timeout(1800)
@HOSTILE
@given(content=hostile_texts())
def test_hostile_objects_never_crash_a_reader_and_every_error_is_located(content: bytes) -> None:
    check_one(content)
    assert max_rss_mib() < 1024  # bounded: 10,000 cases, a few of them 1 MiB and more


@pytest.mark.timeout(1800)
@HOSTILE
@given(content=FILE_CONTENTS)
def test_mutated_spec_texts_never_crash_a_reader_and_every_error_is_located(
    content: bytes,
) -> None:
    check_one(content)
    assert max_rss_mib() < 1024


# --- the real commands and the running daemon on whole hostile trees ------------------------


def hostile_tree(root: Path, count: int, seed_value: int) -> None:
    """`count` hostile spec files, drawn reproducibly from `seed_value`, in `h<seed>/`."""
    drawn: list[bytes] = []

    @seed(seed_value)
    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate])
    @given(hostile_texts())
    def draw(content: bytes) -> None:
        drawn.append(content)

    draw()
    for i, content in enumerate(drawn):
        folder = root / f"h{seed_value}" / f"f{i}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"spec{i}.yaml").write_bytes(content)


def test_commands_on_a_hostile_tree_exit_0_1_or_2_and_never_hang(
    tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    hostile_tree(root, 40, seed_value=1)
    (root / "good" / "good.yaml").parent.mkdir()
    (root / "good" / "good.yaml").write_text(cmdimage("good", outputMode="remote") + "\n")
    for command in ("validate", "build", "status", "graph"):
        result = cli(command, root, env=env, timeout=120)
        assert result.returncode in (0, 1, 2), (command, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, (command, result.stderr[-4000:])
    assert "good" in cli("status", root, env=env, timeout=60).stdout


def test_a_running_daemon_fed_hostile_files_keeps_building(
    tmp_path: Path, watchers: Watchers
) -> None:
    tree = Tree(tmp_path / "tree", tmp_path / "out", "ciw-hostile")
    tree.out.mkdir()
    tree.spec(
        "good/good.yaml", cmdimage("good", args=["sh", "-c", tree.record()], outputMode="remote")
    )
    (tree.root / "good" / "src.txt").write_text("v1")
    daemon = watchers.start(tree.root)
    wait_until(lambda: tree.lines() == ["v1"], "the good image's first build")

    # Four waves of 25 hostile files while it runs; some of their valid images have a
    # `dir` of "/" or "..": hashing the machine must not wedge it (no /proc, no /sys).
    for wave in range(2, 6):
        hostile_tree(tree.root, 25, wave)
    (tree.root / "good" / "src.txt").write_text("v2")

    wait_until(lambda: tree.lines() == ["v1", "v2"], "a build of the good image after them")
    assert daemon.proc.poll() is None
    assert "Traceback" not in daemon.output()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(30) == 0
