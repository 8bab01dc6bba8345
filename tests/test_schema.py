"""`cmdimage-watch schema` and the schema the repository ships: the same text, a valid JSON
Schema, accepting every spec `validate` accepts here and refusing the type errors it refuses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from ruamel.yaml import YAML

from cmdimage_watch import project
from cmdimage_watch.schema import SHIPPED
from tests.helpers import specschema, write

REPO = Path(__file__).resolve().parent.parent
API = "tilt.dev/v1alpha1"


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    return specschema.shipped()


def test_the_shipped_schema_is_what_the_command_prints() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "cmdimage_watch", "schema"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert printed == (REPO / SHIPPED).read_text("utf-8"), (
        f"run `cmdimage-watch schema > {SHIPPED}`"
    )


def docs_of(path: Path) -> list[Any]:
    return list(YAML(typ="safe", pure=True).load_all(path.read_text("utf-8")))


def test_every_spec_of_the_sample_is_valid_and_names_the_schema(
    validator: Draft202012Validator,
) -> None:
    specs = sorted(
        p for p in (REPO / "sample-project").rglob("*.yaml") if not p.name.endswith(".status.yaml")
    )
    assert len(specs) >= 4
    for spec in specs:
        for doc in docs_of(spec):
            assert list(validator.iter_errors(doc)) == [], spec
        if spec.name != "cluster.yaml":  # scripts/setup writes that one
            line = f"# yaml-language-server: $schema={_relative(spec)}"
            assert line in spec.read_text("utf-8").splitlines(), spec


def _relative(spec: Path) -> str:
    up = len(spec.relative_to(REPO).parts) - 1
    return "../" * up + SHIPPED


def _obj(kind: str, name: str, **fields: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name}, **fields}


VALID: list[dict[str, Any]] = [
    _obj(
        "CmdImage",
        "app",
        spec={
            "ref": "gcr.io/team/app",
            "args": ["sh", "-c", "docker build -t $EXPECTED_REF ."],
            "dir": "../app",
            "env": ["A=1", "EMPTY="],
            "imageMaps": ["base"],
            "outputMode": "local-docker-and-remote",
            "cluster": "default",
            "clusterNeeds": "base-image",
        },
        status={"ref": "gcr.io/team/app:tilt-0123456789abcdef"},  # tilt get -o yaml has one
    ),
    _obj(
        "CmdImage",
        "tool",
        spec={"ref": "tool", "args": ["./build.sh"], "outputsImageRefTo": "ref.txt"},
    ),
    _obj(
        "ImageMap",
        "base",
        spec={"selector": "base", "matchExact": False},
        status={"image": "base:v1", "buildStartTime": "2026-12-04T05:52:10.131895Z"},
    ),
    _obj(
        "FileWatch",
        "image:app",
        spec={"watchedPaths": ["src"], "ignores": [{"basePath": "src", "patterns": ["*.tmp"]}]},
    ),
    _obj(
        "Cluster",
        "default",
        metadata={"name": "default", "labels": {"team": "a"}},
        spec={
            "defaultRegistry": {"host": "localhost:5000", "singleName": "all-images"},
            "connection": {"docker": {"host": "tcp://127.0.0.1:23750"}},
        },
    ),
    {
        "apiVersion": API,
        "kind": "CmdImageList",
        "items": [{"metadata": {"name": "listed"}, "spec": {"ref": "listed", "args": ["true"]}}],
    },
    {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            _obj("ImageMap", "other", spec={"selector": "other"}),
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {}},
        ],
    },
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "left-alone"}, "data": {}},
]


def test_what_validate_accepts_the_schema_accepts(
    validator: Draft202012Validator, tmp_path: Path
) -> None:
    write(tmp_path / "all.yaml", *map(json.dumps, VALID))
    write(tmp_path / "base" / "Dockerfile", "FROM scratch")
    index = project.load(tmp_path)
    assert project.problems(index) == []
    for doc in VALID:
        assert list(validator.iter_errors(doc)) == [], doc


def _image(**spec: Any) -> dict[str, Any]:
    return _obj("CmdImage", "app", spec={"ref": "app", "args": ["true"], **spec})


INVALID: dict[str, dict[str, Any]] = {
    "args a string": _image(args="make image"),
    "args empty": _image(args=[]),
    "an arg a mapping": _image(args=["sh", {"c": 1}]),
    "env a string": _image(env="A=1"),
    "env entry with no =": _image(env=["A"]),
    "imageMaps a string": _image(imageMaps="base"),
    "outputMode unknown": _image(outputMode="docker"),
    "clusterNeeds unknown": _image(clusterNeeds="pull"),
    "a field misspelt": _image(argz=["true"]),
    "ref missing": _obj("CmdImage", "app", spec={"args": ["true"]}),
    "ref a number": _image(ref=5),
    "both tag modes": _image(outputTag="v1", outputsImageRefTo="ref.txt"),
    "name with a slash": _obj("ImageMap", "a/b", spec={"selector": "a"}),
    "name missing": {
        "apiVersion": API,
        "kind": "ImageMap",
        "metadata": {},
        "spec": {"selector": "a"},
    },
    "matchExact a string": _obj("ImageMap", "m", spec={"selector": "m", "matchExact": "yes"}),
    "ignores without basePath": _obj("FileWatch", "f", spec={"ignores": [{"patterns": ["x"]}]}),
    "watchedPaths a string": _obj("FileWatch", "f", spec={"watchedPaths": "src"}),
    "registry without host": _obj(
        "Cluster", "default", spec={"defaultRegistry": {"singleName": "x"}}
    ),
    "docker host a number": _obj("Cluster", "c", spec={"connection": {"docker": {"host": 1}}}),
    "a listed item's args": {
        "apiVersion": API,
        "kind": "CmdImageList",
        "items": [{"metadata": {"name": "l"}, "spec": {"ref": "l", "args": "true"}}],
    },
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_what_validate_refuses_the_schema_refuses(
    case: str, validator: Draft202012Validator, tmp_path: Path
) -> None:
    doc = INVALID[case]
    write(tmp_path / "bad.yaml", json.dumps(doc))
    assert project.problems(project.load(tmp_path)) != [], "validate accepts it"
    assert list(validator.iter_errors(doc)) != [], "the schema accepts it"


def test_the_guard_after_each_test_checks_valid_files_only(tmp_path: Path) -> None:
    """`tests/conftest.py` runs `specschema.refused` on each test's tmp_path: a file the
    daemon loads without an error is checked, document by document; a file with an invalid
    object is not a valid fixture and is left out. A schema that refuses everything shows it."""
    valid = write(tmp_path / "ok.yaml", *map(json.dumps, VALID[:2]))
    write(tmp_path / "bad" / "bad.yaml", json.dumps(_obj("CmdImage", "x", spec={"ref": 3})))
    write(tmp_path / "notes.yaml", "just: a mapping\n")  # no object of ours
    (tmp_path / ".hidden").mkdir()
    write(tmp_path / ".hidden" / "skipped.yaml", json.dumps(VALID[0]))
    nothing = Draft202012Validator({"not": {}})

    assert specschema.refused(tmp_path) == []
    assert specschema.refused(tmp_path, nothing) == [
        f"{valid}: document 1: $: {VALID[0]!r} should not be valid under {{}}",
        f"{valid}: document 2: $: {VALID[1]!r} should not be valid under {{}}",
    ]
