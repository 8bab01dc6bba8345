"""Tests for cmdimage_watch.specfiles: real spec files in, objects or errors with positions out.

Every test writes real files. Messages are asserted whole, because `str(error)` is exactly what
a user reads in a status file; positions are 1-based line:column of the offending key or item.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cmdimage_watch import models
from cmdimage_watch.specfiles import MAX_FILE_BYTES, Entry, Loc, SpecFile, load_spec_file

HEAD = "apiVersion: tilt.dev/v1alpha1\nkind: CmdImage\nmetadata:\n  name: app\nspec:\n"
"""Lines 1-5 of a CmdImage; the spec's own lines follow from line 6, indented two spaces."""

GOOD_SPEC = "  ref: app\n  args: [make, image]\n"

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  replicas: 1
  template:
    spec:
      containers:
        - name: app
          image: app
"""

COMPOSE = """\
services:
  web:
    image: app
    ports: ["8080:80"]
"""

TILT_EXPORT = """\
apiVersion: v1
items:
- apiVersion: tilt.dev/v1alpha1
  kind: CmdImage
  metadata:
    annotations:
      tilt.dev/resource: app
    creationTimestamp: "2024-05-02T09:14:07Z"
    labels:
      tilt.dev/owned-by: tiltfile
    managedFields:
    - apiVersion: tilt.dev/v1alpha1
      fieldsType: FieldsV1
      fieldsV1:
        f:spec:
          f:args: {}
          f:ref: {}
      manager: tilt
      operation: Update
      time: "2024-05-02T09:14:07Z"
    name: gcr.io_acme_app
    resourceVersion: "412"
    uid: 2f0c1f34-6f0e-4a8e-9f5c-0d6a3c7e1b2a
  spec:
    args:
    - sh
    - -c
    - docker build -t $EXPECTED_REF .
    dir: /home/dev/app
    env:
    - DOCKER_BUILDKIT=1
    imageMaps:
    - base
    outputMode: local-docker
    ref: gcr.io/acme/app
  status:
    completed:
      finishedAt: "2024-05-02T09:15:11.000000Z"
      startedAt: "2024-05-02T09:14:08.000000Z"
    ref: gcr.io/acme/app:tilt-0123456789abcdef
- apiVersion: tilt.dev/v1alpha1
  kind: ImageMap
  metadata:
    annotations:
      tilt.dev/resource: base
    creationTimestamp: "2024-05-02T09:14:07Z"
    labels:
      tilt.dev/owned-by: tiltfile
    name: base
    resourceVersion: "409"
    uid: 7d1e0b55-3c1a-4f7e-8d2b-6a9f0e4c5b31
  spec:
    matchInEnvVars: true
    selector: base
  status:
    buildStartTime: "2024-05-02T09:13:58.123456Z"
    image: base:tilt-fedcba9876543210
    imageFromCluster: base:tilt-fedcba9876543210
    imageFromLocal: base:tilt-fedcba9876543210
- apiVersion: tilt.dev/v1alpha1
  kind: Session
  metadata:
    name: Tiltfile
  spec: {}
kind: List
metadata:
  resourceVersion: ""
"""


def write(directory: Path, content: str | bytes, name: str = "app.yaml") -> Path:
    path = directory / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def pos(text: str, needle: str) -> str:
    """`line:column` of the first character of `needle` in `text`, counted by hand."""
    before = text[: text.index(needle)]
    return f"{before.count(chr(10)) + 1}:{len(before) - before.rfind(chr(10))}"


def only_entry(spec_file: SpecFile) -> Entry:
    assert spec_file.error == ""
    assert len(spec_file.entries) == 1
    return spec_file.entries[0]


def entry_error(directory: Path, text: str) -> str:
    entry = only_entry(load_spec_file(write(directory, text)))
    assert entry.obj is None
    return entry.error


# --- documents that are ours, and documents that are not ---------------------------------


def test_multi_document_file_gives_one_entry_per_object_in_file_order(tmp_path: Path) -> None:
    text = (
        "# Images for the app.\n"
        f"{HEAD}{GOOD_SPEC}"
        f"---\n{DEPLOYMENT}"
        "---\n"
        "apiVersion: tilt.dev/v1alpha1\n"
        "kind: ImageMap\n"
        "metadata: {name: base}\n"
        "spec: {selector: base}\n"
        f"---\n{COMPOSE}"
        "---\n"
        "# sources of app\n"
        "apiVersion: tilt.dev/v1alpha1\n"
        "kind: FileWatch\n"
        "metadata: {name: 'image:app'}\n"
        "spec:\n"
        "  watchedPaths: [src]\n"
        "  ignores: [{basePath: src, patterns: ['*.tmp']}]\n"
        "---\n"
        "apiVersion: tilt.dev/v1alpha1\n"
        "kind: Cluster\n"
        "metadata: {name: default}\n"
        "spec: {defaultRegistry: {host: 'localhost:5000'}}\n"
    )
    path = write(tmp_path, text)

    loaded = load_spec_file(path)

    assert loaded.error == ""
    assert loaded.is_spec
    summary = [(e.kind, e.name, str(e.loc), e.error) for e in loaded.entries]
    assert summary == [
        ("CmdImage", "app", f"{path}:2:1", ""),
        ("ImageMap", "base", f"{path}:22:1", ""),
        ("FileWatch", "image:app", f"{path}:33:1", ""),  # its comment is not the object
        ("Cluster", "default", f"{path}:40:1", ""),
    ]
    image, image_map, file_watch, cluster = (e.obj for e in loaded.entries)
    assert isinstance(image, models.CmdImage)
    assert image.spec.ref == "app"
    assert image.spec.args == ["make", "image"]
    assert isinstance(image_map, models.ImageMap)
    assert image_map.spec.selector == "base"
    assert isinstance(file_watch, models.FileWatch)
    assert file_watch.spec.ignores == [models.IgnoreDef(base_path="src", patterns=["*.tmp"])]
    assert isinstance(cluster, models.Cluster)
    assert cluster.registry is not None
    assert cluster.registry.host == "localhost:5000"


@pytest.mark.parametrize(
    "text",
    [
        DEPLOYMENT,
        COMPOSE,
        f"{DEPLOYMENT}---\n{COMPOSE}",
        # Tilt's other kinds, and ours under another API version, are not ours either.
        "apiVersion: tilt.dev/v1alpha1\nkind: Session\nmetadata: {name: Tiltfile}\n",
        "apiVersion: tilt.dev/v1alpha2\nkind: CmdImage\nmetadata: {name: app}\n",
        "apiVersion: v1\nkind: List\nitems: [{apiVersion: apps/v1, kind: Deployment}]\n",
        # A kind that is no string at all is simply not one of ours.
        "apiVersion: tilt.dev/v1alpha1\nkind: {CmdImage: true}\n",
        "apiVersion: tilt.dev/v1alpha1\nkind: [CmdImage]\n",
        "apiVersion: v1\nkind: List\nitems: [{apiVersion: tilt.dev/v1alpha1, kind: [CmdImage]}]\n",
        "apiVersion: v1\nkind: List\nitems: [1, text, [tilt.dev/v1alpha1]]\n",
        "apiVersion: v1\nkind: List\nitems: tilt.dev/v1alpha1\n",
    ],
)
def test_a_file_without_our_objects_is_no_spec_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    assert load_spec_file(path) == SpecFile(path)
    assert not load_spec_file(path).is_spec


@pytest.mark.parametrize("text", ["", "\n", "# just a comment\n", "---\n", "---\n...\n---\n"])
def test_an_empty_file_is_no_spec_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    assert load_spec_file(path) == SpecFile(path)


def test_empty_documents_between_objects_are_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, f"---\n---\n{HEAD}{GOOD_SPEC}---\n# nothing\n---\n")
    assert [(e.name, str(e.loc)) for e in load_spec_file(path).entries] == [("app", f"{path}:3:1")]


# --- lists: what `tilt get cmdimages,imagemaps -o yaml` prints ---------------------------


def test_a_tilt_export_loads_item_by_item(tmp_path: Path) -> None:
    path = write(tmp_path, TILT_EXPORT)

    loaded = load_spec_file(path)

    assert loaded.error == ""
    image_at = pos(TILT_EXPORT, "apiVersion: tilt.dev/v1alpha1\n  kind: CmdImage")
    map_at = pos(TILT_EXPORT, "apiVersion: tilt.dev/v1alpha1\n  kind: ImageMap")
    assert (image_at, map_at) == ("3:3", "41:3")
    assert [(e.kind, e.name, str(e.loc), e.error) for e in loaded.entries] == [
        ("CmdImage", "gcr.io_acme_app", f"{path}:{image_at}", ""),
        ("ImageMap", "base", f"{path}:{map_at}", ""),
    ]
    image, image_map = (e.obj for e in loaded.entries)
    assert isinstance(image, models.CmdImage)
    assert image.status is None  # a CmdImage's status in a spec file is ignored
    assert image.spec.image_maps == ["base"]
    assert image.spec.env == ["DOCKER_BUILDKIT=1"]
    assert image.spec.output_mode == "local-docker"
    assert image.metadata.model_dump(by_alias=True, exclude_none=True, exclude={"name"}) == {
        "annotations": {"tilt.dev/resource": "app"},
        "creationTimestamp": "2024-05-02T09:14:07Z",
        "labels": {"tilt.dev/owned-by": "tiltfile"},
        "managedFields": [
            {
                "apiVersion": "tilt.dev/v1alpha1",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:args": {}, "f:ref": {}}},
                "manager": "tilt",
                "operation": "Update",
                "time": "2024-05-02T09:14:07Z",
            }
        ],
        "resourceVersion": "412",
        "uid": "2f0c1f34-6f0e-4a8e-9f5c-0d6a3c7e1b2a",
    }
    assert isinstance(image_map, models.ImageMap)
    assert image_map.spec.match_in_env_vars is True
    assert image_map.status == models.ImageMapStatus(
        image="base:tilt-fedcba9876543210",
        image_from_local="base:tilt-fedcba9876543210",
        image_from_cluster="base:tilt-fedcba9876543210",
        build_start_time=datetime(2024, 5, 2, 9, 13, 58, 123456, tzinfo=UTC),
    )


def test_typed_lists_give_their_items_kind_and_api_version(tmp_path: Path) -> None:
    text = (
        "apiVersion: tilt.dev/v1alpha1\n"
        "kind: CmdImageList\n"
        "items:\n"
        "- metadata: {name: one}\n"
        "  spec: {ref: one, args: [make]}\n"
        "- metadata: {name: two}\n"
        "  spec: {ref: two, args: [make]}\n"
        "---\n"
        "apiVersion: tilt.dev/v1alpha1\n"
        "kind: ImageMapList\n"
        "items:\n"
        "  - metadata: {name: base}\n"
        "    spec: {selector: base}\n"
    )
    path = write(tmp_path, text)

    loaded = load_spec_file(path)

    assert [(e.kind, e.name, str(e.loc), e.error) for e in loaded.entries] == [
        ("CmdImage", "one", f"{path}:4:3", ""),
        ("CmdImage", "two", f"{path}:6:3", ""),
        ("ImageMap", "base", f"{path}:12:5", ""),
    ]
    assert all(e.obj is not None and e.obj.kind == e.kind for e in loaded.entries)


def test_an_invalid_list_item_is_reported_where_it_is(tmp_path: Path) -> None:
    broken = TILT_EXPORT.replace("    outputMode: local-docker\n", "    outputModes: remote\n")
    path = write(tmp_path, broken)

    image, image_map = load_spec_file(path).entries

    assert image.obj is None
    at = pos(broken, "outputModes")
    assert at == "34:5"
    assert image.error == (
        f"invalid spec: {path}:{at}: spec.outputModes: unknown field; did you mean outputMode?"
    )
    assert image.name == "gcr.io_acme_app"
    assert image_map.error == ""


@pytest.mark.parametrize(
    ("items", "where", "message"),
    [
        ("[1]", "3:9", "items[0]: a CmdImage is a mapping, not a number"),
        ("[hello]", "3:9", "items[0]: a CmdImage is a mapping, not a string"),
        ("hello", "3:1", "items: a CmdImageList holds a list, not a string"),
    ],
)
def test_an_item_of_a_typed_list_that_is_no_object_is_an_error_where_it_is(
    tmp_path: Path, items: str, where: str, message: str
) -> None:
    text = f"apiVersion: tilt.dev/v1alpha1\nkind: CmdImageList\nitems: {items}\n"
    path = write(tmp_path, text)
    (entry,) = load_spec_file(path).entries
    assert (entry.kind, entry.name, entry.obj) == ("CmdImage", "", None)
    assert entry.problems == (f"{path}:{where}: {message}",)
    assert entry.error == f"invalid spec: {path}:{where}: {message}"


def test_scalars_in_a_kubernetes_list_are_none_of_ours(tmp_path: Path) -> None:
    path = write(tmp_path, "apiVersion: v1\nkind: List\nitems: [1, hello]\n")
    assert load_spec_file(path).entries == ()


def test_merge_keys_and_anchors_work_in_lists(tmp_path: Path) -> None:
    text = (
        "apiVersion: v1\n"
        "kind: List\n"
        "items:\n"
        "- &one\n"
        "  apiVersion: tilt.dev/v1alpha1\n"
        "  kind: CmdImage\n"
        "  metadata: {name: one}\n"
        "  spec: &spec {ref: one, args: [make, one]}\n"
        "- <<: *one\n"
        "  metadata: {name: two}\n"
        "  spec:\n"
        "    <<: *spec\n"
        "    ref: two\n"
    )
    path = write(tmp_path, text)

    one, two = load_spec_file(path).entries

    assert isinstance(one.obj, models.CmdImage)
    assert isinstance(two.obj, models.CmdImage)
    assert (one.obj.spec.ref, two.obj.spec.ref) == ("one", "two")
    assert two.obj.spec.args == ["make", "one"]


def test_a_redefined_anchor_is_legal_yaml_and_the_last_one_counts(tmp_path: Path) -> None:
    # ruamel warns about this; under this suite's filterwarnings=error a warning would fail
    path = write(tmp_path, f"{HEAD}  ref: &x app\n  args: [&x make, *x]\n")
    obj = only_entry(load_spec_file(path)).obj
    assert isinstance(obj, models.CmdImage)
    assert obj.spec.args == ["make", "make"]


def test_scalars_come_out_as_plain_builtins(tmp_path: Path) -> None:
    text = (
        "apiVersion: tilt.dev/v1alpha1\n"
        "kind: Cluster\n"
        "metadata:\n"
        "  name: default\n"
        "  labels:\n"
        "    weight: 1.5\n"
        "    mask: 0x10\n"
        "    'on': &t true\n"
        "    again: *t\n"
        "    note: |\n"
        "      two lines\n"
        "      here\n"
        "spec:\n"
        "  connection:\n"
        "    kubernetes: {context: !ctx kind-dev, cert: !!binary aGVsbG8=}\n"
    )
    obj = only_entry(load_spec_file(write(tmp_path, text))).obj

    assert isinstance(obj, models.Cluster)
    labels = obj.metadata.labels
    assert labels == {
        "weight": 1.5,
        "mask": 16,
        "on": True,
        "again": True,
        "note": "two lines\nhere\n",
    }
    assert [type(v) for v in labels.values()] == [float, int, bool, bool, str]
    # A local tag or !!binary in an `Any` field must not break the inputs digest's JSON dump.
    assert obj.spec.model_dump(mode="json") == {
        "connection": {"kubernetes": {"context": "kind-dev", "cert": "aGVsbG8="}, "docker": None},
        "default_registry": None,
    }


def test_a_metadata_field_kubernetes_lacks_is_a_typo(tmp_path: Path) -> None:
    text = HEAD.replace("  name: app\n", "  name: app\n  lables: {a: b}\n") + GOOD_SPEC
    path = tmp_path / "app.yaml"
    assert entry_error(tmp_path, text) == (
        f"invalid spec: {path}:5:3: metadata.lables: unknown field; did you mean labels?"
    )


# --- invalid objects: `invalid spec: <file>:<line>:<col>: <field path>: <message>` ---------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "  ref: app\n  args: [make]\n  outputTags: v1\n",
            "8:3: spec.outputTags: unknown field; did you mean outputTag?",
        ),
        (
            "  ref: app\n  arg: [make]\n",
            "7:3: spec.arg: unknown field; did you mean args? (+1 more)",
        ),
        ("  ref: app\n  args: [make]\n  zzz: 1\n", "8:3: spec.zzz: unknown field"),
        (
            # Tilt's names are camelCase; the Python names are not a second spelling.
            "  ref: app\n  args: [make]\n  output_tag: v1\n",
            "8:3: spec.output_tag: unknown field; did you mean outputTag?",
        ),
        ("  args: [make]\n", "5:1: spec.ref: required field is missing"),
        (
            "  ref: app\n  args: []\n",
            "7:3: spec.args: List should have at least 1 item after validation, not 0",
        ),
        ("  ref: app\n  args: make image\n", "7:3: spec.args: Input should be a valid list"),
        (
            "  ref: app\n  args:\n    - make\n    - 1\n",
            "9:7: spec.args[1]: Input should be a valid string",
        ),
        (
            "  ref: app\n  args: [make]\n  env:\n    - A=1\n    - DEBUG\n",
            "10:7: spec.env[1]: 'DEBUG' is not KEY=VALUE; each entry sets one variable, "
            "like FOO=bar",
        ),
        (
            "  ref: app\n  args: [make]\n  env: {A: 1}\n",
            "8:3: spec.env: Input should be a valid list",
        ),
        (
            "  ref: App\n  args: [make]\n",
            "6:3: spec.ref: invalid reference format: repository name (library/App) must be "
            "lowercase",
        ),
        (
            f"  ref: {'ab' * 32}\n  args: [make]\n",
            f"6:3: spec.ref: invalid repository name ({'ab' * 32}), cannot specify 64-byte "
            "hexadecimal strings",
        ),
        ("  ref: ''\n  args: [make]\n", "6:3: spec.ref: invalid reference format"),
        (
            "  ref: app\n  args: [make]\n  outputTag: -v1\n",
            '8:3: spec.outputTag: invalid tag "-v1": a tag is up to 128 letters, digits, "_", '
            '"." and "-", not starting with "." or "-"',
        ),
        (
            "  ref: app\n  args: [make]\n  outputTag: v1\n  outputsImageRefTo: ref.txt\n",
            "5:1: spec: outputTag and outputsImageRefTo cannot both be set: use outputTag when "
            "the command always builds one tag, outputsImageRefTo when it writes the ref to a file",
        ),
        (
            "  ref: app\n  args: [make]\n  outputMode: docker\n",
            "8:3: spec.outputMode: Input should be '', 'local-docker', 'local-docker-and-remote' "
            "or 'remote'",
        ),
        (
            "  ref: app\n  args: [make]\n  clusterNeeds: pull\n",
            "8:3: spec.clusterNeeds: Input should be '', 'push' or 'base-image'",
        ),
        (
            "  ref: app\n  args: []\n  outputTag: -v1\n  zzz: 1\n",
            "9:3: spec.zzz: unknown field (+2 more)",
        ),
    ],
)
def test_invalid_cmdimage_names_file_line_column_and_field(
    tmp_path: Path, spec: str, expected: str
) -> None:
    path = tmp_path / "app.yaml"
    assert entry_error(tmp_path, HEAD + spec) == f"invalid spec: {path}:{expected}"


def test_every_problem_of_an_object_is_listed_at_its_field_in_file_order(tmp_path: Path) -> None:
    spec = "  zzz: 1\n  ref: App\n  args: []\n  outputTag: -v1\n"
    entry = only_entry(load_spec_file(write(tmp_path, HEAD + spec)))
    path = tmp_path / "app.yaml"
    assert entry.error == f"invalid spec: {path}:6:3: spec.zzz: unknown field (+3 more)"
    assert entry.problems == (
        f"{path}:6:3: spec.zzz: unknown field",
        f"{path}:7:3: spec.ref: invalid reference format: repository name (library/App) must "
        "be lowercase",
        f"{path}:8:3: spec.args: List should have at least 1 item after validation, not 0",
        f'{path}:9:3: spec.outputTag: invalid tag "-v1": a tag is up to 128 letters, digits, '
        '"_", "." and "-", not starting with "." or "-"',
    )
    assert entry.at("spec.args") == Loc(path, 8, 3)
    assert entry.at("spec.args[0]") == Loc(path, 8, 3)  # no item: its list
    assert entry.at("spec.cluster") == Loc(path, 5, 1)  # not written: its parent, spec


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "apiVersion: tilt.dev/v1alpha1\nkind: CmdImage\nmetadata:\n  labels: {a: b}\n"
            f"spec:\n{GOOD_SPEC}",
            "3:1: metadata.name: required field is missing",
        ),
        (
            "apiVersion: tilt.dev/v1alpha1\nkind: CmdImage\nmetadata: {name: ''}\n"
            f"spec:\n{GOOD_SPEC}",
            "3:12: metadata.name: String should have at least 1 character",
        ),
        (
            f"apiVersion: tilt.dev/v1alpha1\nkind: CmdImage\nspec:\n{GOOD_SPEC}",
            "1:1: metadata: required field is missing",
        ),
        (
            "apiVersion: tilt.dev/v1alpha1\nkind: CmdImage\nmetadata: {name: app}\n",
            "1:1: spec: required field is missing",
        ),
        (
            "apiVersion: tilt.dev/v1alpha1\nkind: CmdImage\nmetadata: {name: app}\nspecs: {}\n",
            "4:1: specs: unknown field; did you mean spec? (+1 more)",
        ),
        (
            "apiVersion: tilt.dev/v1alpha1\nkind: ImageMap\nmetadata: {name: base}\n"
            "spec: {selector: Base}\n",
            "4:8: spec.selector: invalid reference format: repository name (library/Base) must "
            "be lowercase",
        ),
        (
            "apiVersion: tilt.dev/v1alpha1\nkind: ImageMap\nmetadata: {name: base}\n"
            "spec: {selector: base}\nstatus:\n  imag: base:v1\n",
            "6:3: status.imag: unknown field; did you mean image?",
        ),
        (
            "apiVersion: tilt.dev/v1alpha1\nkind: FileWatch\nmetadata: {name: w}\nspec:\n"
            "  ignores:\n    - basePath: .\n      patern: ['*.o']\n",
            "7:7: spec.ignores[0].patern: unknown field; did you mean patterns?",
        ),
        (
            "apiVersion: tilt.dev/v1alpha1\nkind: Cluster\nmetadata: {name: default}\nspec:\n"
            "  defaultRegistry:\n    hots: localhost:5000\n",
            "6:5: spec.defaultRegistry.hots: unknown field; did you mean host? (+1 more)",
        ),
    ],
)
def test_invalid_objects_of_every_kind(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "app.yaml"
    assert entry_error(tmp_path, text) == f"invalid spec: {path}:{expected}"


def test_an_invalid_object_keeps_its_kind_name_and_place_and_spoils_nothing_else(
    tmp_path: Path,
) -> None:
    bad = HEAD.replace("name: app", "name: broken") + "  ref: app\n"
    path = write(tmp_path, f"{HEAD}{GOOD_SPEC}---\n{bad}")

    good, broken = load_spec_file(path).entries

    assert good.error == ""
    assert isinstance(good.obj, models.CmdImage)
    assert broken == Entry(
        "CmdImage",
        "broken",
        Loc(path, 9, 1),
        error=f"invalid spec: {path}:13:1: spec.args: required field is missing",
    )


# --- files that cannot be read: SpecFile.error is `<file>:<line>:<col>: <message>` ---------


def file_error(directory: Path, content: str | bytes) -> str:
    loaded = load_spec_file(write(directory, content))
    assert loaded.entries == ()
    assert loaded.is_spec
    return loaded.error


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"{HEAD}  ref: app\n  args: [make, image\n",
            "8:1: expected ',' or ']', but got '<stream end>'",
        ),
        (
            f"{HEAD}  ref: app\n args: [make]\n",
            "7:2: expected <block end>, but found '<block mapping start>'",
        ),
        (f"{HEAD}  ref: 'app\n", "7:1: found unexpected end of stream"),
        (
            f"{HEAD}  ref: app\n  ref: web\n  args: [make]\n",
            '7:3: found duplicate key "ref" with value "web" (original value: "app")',
        ),
        (f"{HEAD}  ref: app\n  args: [*nothing]\n", "7:10: found undefined alias 'nothing'"),
    ],
)
def test_yaml_syntax_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert file_error(tmp_path, text) == f"{tmp_path / 'app.yaml'}:{expected}"


@pytest.mark.parametrize(
    ("spec", "at"),
    [
        ("\tref: app\n", "6:1"),
        ("  ref: app\n\targs: [make]\n", "7:1"),
        ("  ref: app\n  args:\n  \t- make\n", "8:3"),
    ],
)
def test_tab_indentation_says_to_indent_with_spaces(tmp_path: Path, spec: str, at: str) -> None:
    assert file_error(tmp_path, HEAD + spec) == (
        f"{tmp_path / 'app.yaml'}:{at}: found character '\\t' that cannot start any token "
        "(YAML indents with spaces, not tabs)"
    )


def test_non_utf8_bytes_are_located_by_line_and_character(tmp_path: Path) -> None:
    content = HEAD.encode() + "  ref: café\n  args: [é".encode() + b"\xff]\n"
    # line 7 is `  args: [é<0xff>]`: the bad byte is its 11th character (é is 2 bytes, 1 column)
    assert file_error(tmp_path, content) == (
        f"{tmp_path / 'app.yaml'}:7:11: byte 0xff is not UTF-8; save the file as UTF-8"
    )


def test_latin1_file_is_refused_at_its_first_accent(tmp_path: Path) -> None:
    content = (HEAD + "  ref: app\n  args: [echo, 'Grüße']\n").encode("latin-1")
    assert file_error(tmp_path, content) == (
        f"{tmp_path / 'app.yaml'}:7:19: byte 0xfc is not UTF-8; save the file as UTF-8"
    )


@pytest.mark.parametrize(
    ("char", "at"),
    [("\x00", "7:17"), ("\x07", "7:17"), ("\x7f", "7:17"), ("\ufffe", "7:17"), ("\x9b", "7:17")],
)
def test_characters_yaml_forbids_are_located(tmp_path: Path, char: str, at: str) -> None:
    text = f"{HEAD}  ref: app\n  args: [make, i{char}mage]\n"
    assert file_error(tmp_path, text) == (
        f"{tmp_path / 'app.yaml'}:{at}: character U+{ord(char):04X} is not allowed in YAML; "
        "delete it"
    )


def test_utf8_byte_order_mark_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeff" + HEAD + GOOD_SPEC)
    assert only_entry(load_spec_file(path)).name == "app"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "# tilt.dev/v1alpha1 objects below\n- app\n- base\n",
            "2:1: a document must be a mapping, not a list",
        ),
        (
            "# tilt.dev/v1alpha1 objects below\n42\n",
            "2:1: a document must be a mapping, not a number",
        ),
        (
            "# tilt.dev/v1alpha1 objects below\nyes\n",
            "2:1: a document must be a mapping, not a string",
        ),
        (
            "# tilt.dev/v1alpha1 objects below\ntrue\n",
            "2:1: a document must be a mapping, not a boolean",
        ),
        (
            "# tilt.dev/v1alpha1 objects below\n1.5\n",
            "2:1: a document must be a mapping, not a number",
        ),
        (
            f"{HEAD}{GOOD_SPEC}---\n- kind: CmdImage\n",
            "9:1: a document must be a mapping, not a list",
        ),
        (
            f"{HEAD}{GOOD_SPEC}---\njust some words\n",
            "9:1: a document must be a mapping, not a string",
        ),
    ],
)
def test_a_document_that_is_not_a_mapping_spoils_the_file(
    tmp_path: Path, text: str, expected: str
) -> None:
    loaded = load_spec_file(write(tmp_path, text))
    assert loaded == SpecFile(tmp_path / "app.yaml", error=f"{tmp_path / 'app.yaml'}:{expected}")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-02-30", "cannot read this timestamp value: day is out of range for month"),
        (
            "!!int many",
            "cannot read this int value: invalid literal for int() with base 10: 'many'",
        ),
        ("!!bool maybe", "cannot read this bool value: 'maybe'"),
        ("!!float much", "cannot read this float value: could not convert string to float: 'much'"),
    ],
)
def test_values_yaml_cannot_convert_are_located(tmp_path: Path, value: str, expected: str) -> None:
    text = (
        "apiVersion: tilt.dev/v1alpha1\nkind: CmdImage\nmetadata:\n  name: app\n  labels:\n"
        f"    built: {value}\nspec:\n{GOOD_SPEC}"
    )
    assert file_error(tmp_path, text) == f"{tmp_path / 'app.yaml'}:6:12: {expected}"


def test_ruamel_failures_without_a_position_are_file_errors(tmp_path: Path) -> None:
    # ruamel asserts (a bare AssertionError) on an !!omap that repeats a key
    text = f"{HEAD}  ref: app\n  args: [make]\n  x: !!omap [{{a: 1}}, {{a: 2}}]\n"
    assert (
        file_error(tmp_path, text)
        == f"{tmp_path / 'app.yaml'}:1:1: unreadable YAML: AssertionError()"
    )


def test_a_file_over_one_mebibyte_is_refused_without_parsing(tmp_path: Path) -> None:
    padding = "#" * 99 + "\n"
    text = HEAD + GOOD_SPEC + padding * (MAX_FILE_BYTES // len(padding))
    assert len(text) > MAX_FILE_BYTES
    assert file_error(tmp_path, text) == (
        f"{tmp_path / 'app.yaml'}:1:1: file is {len(text)} bytes; spec files are limited to 1 MiB"
    )


def test_a_file_of_exactly_one_mebibyte_is_read(tmp_path: Path) -> None:
    text = HEAD + GOOD_SPEC
    text += "#" * (MAX_FILE_BYTES - len(text) - 1) + "\n"
    assert len(text.encode()) == MAX_FILE_BYTES
    assert only_entry(load_spec_file(write(tmp_path, text))).error == ""


def nested_spec(levels: int) -> str:
    """A CmdImage whose document nests `levels` collections deep (document, spec, lists)."""
    lists = levels - 2
    return f"{HEAD}  ref: app\n  args: [make]\n  deep: {'[' * lists}1{']' * lists}\n"


def test_a_hundred_levels_of_nesting_are_allowed(tmp_path: Path) -> None:
    # loaded all the way to validation, which refuses the unknown field
    error = entry_error(tmp_path, nested_spec(100))
    assert error == f"invalid spec: {tmp_path / 'app.yaml'}:8:3: spec.deep: unknown field"


@pytest.mark.parametrize(("levels", "column"), [(101, 108), (5_000, 108), (300_000, 108)])
def test_nesting_over_a_hundred_levels_is_refused_where_it_happens(
    tmp_path: Path, levels: int, column: int
) -> None:
    assert file_error(tmp_path, nested_spec(levels)) == (
        f"{tmp_path / 'app.yaml'}:8:{column}: nested deeper than 100 levels"
    )


def test_deep_nesting_through_aliases_is_refused(tmp_path: Path) -> None:
    # Each alias adds no depth while parsing, only once expanded.
    lines = ["  a0: &a0 [x]"] + [f"  a{i}: &a{i} [*a{i - 1}]" for i in range(1, 101)]
    text = HEAD.replace("spec:\n", "") + "\n".join(lines) + "\nspec:\n" + GOOD_SPEC
    assert file_error(tmp_path, text).endswith(": nested deeper than 100 levels")


def billion_laughs() -> str:
    lines = ["apiVersion: tilt.dev/v1alpha1", "kind: CmdImage", "metadata:", "  name: lol"]
    lines.append('  lol0: &lol0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]')
    for i in range(1, 10):
        lines.append(f"  lol{i}: &lol{i} [" + ",".join([f"*lol{i - 1}"] * 10) + "]")
    return "\n".join([*lines, "spec:", "  ref: lol", "  args: [make]", ""])


@pytest.mark.timeout(60)  # a hang guard: tracemalloc slows the parse about fourfold
def test_an_alias_bomb_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    path = write(tmp_path, billion_laughs())  # 10**9 strings once expanded
    tracemalloc.start()
    try:
        loaded = load_spec_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert re.fullmatch(
        rf"{re.escape(str(path))}:5:\d+: more than 200000 values after expanding aliases",
        loaded.error,
    )
    assert loaded.entries == ()
    assert peak < 128 * 1024 * 1024


@pytest.mark.parametrize("loop", ["&loop [*loop]", "&loop {again: *loop}"])
def test_an_alias_inside_its_own_anchor_cannot_loop(tmp_path: Path, loop: str) -> None:
    # ruamel constructs the inner alias as null, so the copy has nothing to recurse into
    text = f"{HEAD}  ref: app\n  args: [make]\n  loop: {loop}\n"
    assert entry_error(tmp_path, text) == (
        f"invalid spec: {tmp_path / 'app.yaml'}:8:3: spec.loop: unknown field"
    )


@pytest.mark.parametrize(
    "content",
    [
        "services:\n  web: [\n",  # syntax error
        "services:\n\tweb: {}\n",  # tabs
        "name: caf\xe9\n".encode("latin-1"),  # not UTF-8
        "- just\n- a list\n",  # not a mapping
        "# " + "x" * MAX_FILE_BYTES + "\n",  # too big
        "a: " + "[" * 200 + "]" * 200 + "\n",  # too deep
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
            for p, c in zip("abcdef", "bcdefg", strict=True)
        ),
    ],
)
def test_a_broken_file_that_never_mentions_tilt_is_not_ours(
    tmp_path: Path, content: str | bytes
) -> None:
    path = write(tmp_path, content)
    assert load_spec_file(path) == SpecFile(path)


def test_a_missing_file_is_a_deleted_one(tmp_path: Path) -> None:
    path = tmp_path / "gone.yaml"
    assert load_spec_file(path) == SpecFile(path)
    (tmp_path / "file.yaml").write_text("")
    assert load_spec_file(tmp_path / "file.yaml" / "x.yaml") == SpecFile(
        tmp_path / "file.yaml" / "x.yaml"
    )
    (tmp_path / "dir.yaml").mkdir()
    assert load_spec_file(tmp_path / "dir.yaml") == SpecFile(tmp_path / "dir.yaml")


def test_an_unreadable_file_is_a_file_error(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.symlink_to(path)  # opening it fails with ELOOP, even for root
    assert load_spec_file(path) == SpecFile(
        path, error=f"{path}:1:1: cannot read the file: {os.strerror(errno.ELOOP)}"
    )


# --- property: nothing raises, every message is located ----------------------------------

SEEDS = [
    HEAD + GOOD_SPEC,
    HEAD + "  ref: gcr.io/acme/app:v1\n  args:\n    - sh\n    - -c\n    - make\n  env: [A=1]\n"
    "  imageMaps: [base]\n  outputTag: dev\n",
    TILT_EXPORT,
    f"{DEPLOYMENT}---\n{HEAD}{GOOD_SPEC}---\n{COMPOSE}",
    "apiVersion: tilt.dev/v1alpha1\nkind: FileWatch\nmetadata: {name: 'image:app'}\nspec:\n"
    "  watchedPaths: [src, go.mod]\n  ignores:\n  - basePath: src\n    patterns: ['*.tmp']\n",
    "apiVersion: tilt.dev/v1alpha1\nkind: Cluster\nmetadata: {name: default}\nspec:\n"
    "  defaultRegistry: {host: 'localhost:5000', singleName: app}\n"
    "  connection: {docker: {host: 'tcp://builder:2375'}}\n",
    "apiVersion: tilt.dev/v1alpha1\nkind: ImageMapList\nitems:\n- metadata: {name: base}\n"
    "  spec: {selector: base}\n"
    "  status: {image: 'base:v1', buildStartTime: 2024-05-02T09:13:58Z}\n",
    # anchors, aliases and a merge key, small enough to stay quick
    "apiVersion: v1\nkind: List\nitems:\n- &one\n  apiVersion: tilt.dev/v1alpha1\n"
    "  kind: CmdImage\n  metadata: {name: one, labels: &l {a: &v [x, x]}}\n"
    "  spec: &s {ref: one, args: [make, one], env: [A=1]}\n"
    "- <<: *one\n  metadata: {name: two, labels: {b: [*v, *v, *l]}}\n  spec: {<<: *s, ref: two}\n",
]


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True) or [b""]


Mutation = Callable[[st.DrawFn, bytes], bytes]


def _delete_line(draw: st.DrawFn, data: bytes) -> bytes:
    lines = _lines(data)
    del lines[draw(st.integers(0, len(lines) - 1))]
    return b"".join(lines)


def _duplicate_line(draw: st.DrawFn, data: bytes) -> bytes:
    lines = _lines(data)
    i = draw(st.integers(0, len(lines) - 1))
    return b"".join([*lines[: i + 1], lines[i], *lines[i + 1 :]])


def _swap_lines(draw: st.DrawFn, data: bytes) -> bytes:
    lines = _lines(data)
    i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
    lines[i], lines[j] = lines[j], lines[i]
    return b"".join(lines)


def _insert(draw: st.DrawFn, data: bytes, piece: bytes) -> bytes:
    at = draw(st.integers(0, len(data)))
    return data[:at] + piece + data[at:]


def _insert_tab(draw: st.DrawFn, data: bytes) -> bytes:
    lines = _lines(data)
    i = draw(st.integers(0, len(lines) - 1))
    lines[i] = b"\t" + lines[i]
    return b"".join(lines)


def _insert_text(draw: st.DrawFn, data: bytes) -> bytes:
    return _insert(
        draw, data, draw(st.text(min_size=1, max_size=8)).encode("utf-8", "surrogatepass")
    )


def _insert_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    return _insert(draw, data, draw(st.binary(min_size=1, max_size=4)))


def _insert_yaml_punctuation(draw: st.DrawFn, data: bytes) -> bytes:
    return _insert(
        draw,
        data,
        draw(
            st.sampled_from(
                [
                    b"&a ",
                    b"*a",
                    b"- ",
                    b": ",
                    b"[",
                    b"}",
                    b"\n---\n",
                    b"'",
                    b"!!",
                    b"? ",
                    b"|\n",
                    b"<<: ",
                ]
            )
        ),
    )


def _delete_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    at = draw(st.integers(0, len(data)))
    return data[:at] + data[at + draw(st.integers(1, 16)) :]


def _truncate(draw: st.DrawFn, data: bytes) -> bytes:
    return data[: draw(st.integers(0, len(data)))]


MUTATIONS: list[Mutation] = [
    _delete_line,
    _duplicate_line,
    _swap_lines,
    _insert_tab,
    _insert_text,
    _insert_bytes,
    _insert_yaml_punctuation,
    _delete_bytes,
    _truncate,
]


@st.composite
def mutated_spec(draw: st.DrawFn) -> bytes:
    data = draw(st.sampled_from(SEEDS)).encode("utf-8")
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3)):
        data = mutation(draw, data)
    return data


MARKED = st.sampled_from([b"", b"# tilt.dev/v1alpha1\n", HEAD.encode()])
FILE_CONTENTS = st.one_of(
    mutated_spec(),
    st.builds(lambda head, text: head + text.encode("utf-8", "surrogatepass"), MARKED, st.text()),
    st.builds(lambda head, data: head + data, MARKED, st.binary()),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=FILE_CONTENTS)
def test_any_file_loads_without_raising_and_every_message_is_located(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spec.yaml"
        path.write_bytes(content)

        loaded = load_spec_file(path)

    where = re.escape(str(path))
    assert loaded.path == path
    if loaded.error:
        assert re.match(rf"{where}:[1-9]\d*:[1-9]\d*: .", loaded.error), loaded.error
        assert loaded.entries == ()
    for entry in loaded.entries:
        assert entry.loc.path == path
        assert entry.kind in models.MODELS
        assert (entry.obj is None) != (entry.error == "")
        if entry.error:
            assert re.match(rf"invalid spec: {where}:[1-9]\d*:[1-9]\d*: ", entry.error)
        else:
            assert entry.obj is not None
            assert entry.obj.metadata.name == entry.name


def test_a_json_surrogate_pair_is_one_character_and_a_lone_half_is_an_error(
    tmp_path: Path,
) -> None:
    pair = HEAD.replace("name: app", 'name: "\\ud83d\\ude00"') + GOOD_SPEC
    (entry,) = load_spec_file(write(tmp_path, pair)).entries
    assert entry.name == "\U0001f600" and entry.obj is not None
    lone = HEAD + '  ref: app\n  args: ["\\udc00"]\n'
    loaded = load_spec_file(write(tmp_path, lone))
    assert loaded.error == (
        f"{tmp_path / 'app.yaml'}:7:10: a string holds half of a UTF-16 surrogate pair, which "
        "is no character"
    )
