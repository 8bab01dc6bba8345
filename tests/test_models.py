"""Tests for cmdimage_watch.models: Tilt's names and rules on the pydantic mirrors.

The loader's view (positions, messages) is in test_specfiles; here the models are validated
directly, as the other modules build and read them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from cmdimage_watch import models, refs

SPEC: dict[str, Any] = {"ref": "app", "args": ["make"]}


def errors(spec: dict[str, Any]) -> list[tuple[tuple[int | str, ...], str]]:
    with pytest.raises(ValidationError) as caught:
        models.CmdImageSpec.model_validate(spec)
    return [(e["loc"], e["msg"]) for e in caught.value.errors(include_url=False)]


def test_camel_case_from_yaml_and_snake_case_from_python_mean_the_same() -> None:
    from_yaml = models.CmdImageSpec.model_validate(
        {**SPEC, "imageMaps": ["base"], "outputsImageRefTo": "ref.txt", "clusterNeeds": "push"}
    )
    from_python = models.CmdImageSpec(
        ref="app",
        args=["make"],
        image_maps=["base"],
        outputs_image_ref_to="ref.txt",
        cluster_needs="push",
    )
    assert from_yaml == from_python
    assert from_python.model_dump(by_alias=True, exclude_defaults=True) == {
        **SPEC,
        "imageMaps": ["base"],
        "outputsImageRefTo": "ref.txt",
        "clusterNeeds": "push",
    }


def test_env_entries_are_checked_one_by_one() -> None:
    assert errors({**SPEC, "env": ["A=1", "B", "C=", "=D", "E"]}) == [
        (
            ("env", 1),
            "Value error, 'B' is not KEY=VALUE; each entry sets one variable, like FOO=bar",
        ),
        (
            ("env", 4),
            "Value error, 'E' is not KEY=VALUE; each entry sets one variable, like FOO=bar",
        ),
    ]


def test_ref_and_tag_use_dockers_rules() -> None:
    assert errors({**SPEC, "ref": "App", "outputTag": "-v1"}) == [
        (
            ("ref",),
            "Value error, invalid reference format: repository name (library/App) must be "
            "lowercase",
        ),
        (("outputTag",), f"Value error, {_tag_error('-v1')}"),
    ]
    assert (
        models.CmdImageSpec.model_validate({**SPEC, "outputTag": "V1.2_x"}).output_tag == "V1.2_x"
    )


def _tag_error(tag: str) -> str:
    with pytest.raises(refs.RefError) as caught:
        refs.validate_tag(tag)
    return str(caught.value)


def test_one_tag_mode_at_a_time() -> None:
    [(loc, message)] = errors({**SPEC, "outputTag": "v1", "outputsImageRefTo": "ref.txt"})
    assert loc == ()
    assert message.startswith("Value error, outputTag and outputsImageRefTo cannot both be set")


@pytest.mark.parametrize(
    "spec",
    [
        {"args": ["make"]},
        {"ref": "app"},
        {"ref": "app", "args": []},
        {"ref": "app", "args": ["make"], "outputMode": "docker"},
        {"ref": "app", "args": ["make"], "outputTags": "v1"},
    ],
)
def test_bad_specs_are_refused(spec: dict[str, Any]) -> None:
    assert errors(spec)


def test_models_are_frozen() -> None:
    spec = models.CmdImageSpec.model_validate(SPEC)
    with pytest.raises(ValidationError, match="frozen"):
        spec.ref = "other"  # type: ignore[misc]


def test_object_meta_accepts_what_kubernetes_has() -> None:
    meta = models.ObjectMeta.model_validate(
        {"name": "app", "uid": "u-1", "labels": {"a": "b"}, "resourceVersion": "3"}
    )
    assert (meta.name, meta.uid, meta.labels, meta.resource_version) == (
        "app",
        "u-1",
        {"a": "b"},
        "3",
    )
    with pytest.raises(ValidationError):
        models.ObjectMeta.model_validate({"name": ""})
    with pytest.raises(ValidationError, match="lables"):
        models.ObjectMeta.model_validate({"name": "app", "lables": {"a": "b"}})


def test_times_are_rfc3339_utc_with_microseconds() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert models.format_time(datetime(2024, 5, 2, 11, 14, 8, tzinfo=plus_two)) == (
        "2024-05-02T09:14:08.000000Z"
    )
    status = models.ImageMapStatus(
        image="base:v1", build_start_time=datetime(2024, 5, 2, 9, 13, 58, 123456, tzinfo=UTC)
    )
    assert status.model_dump(mode="json", by_alias=True, exclude_defaults=True) == {
        "image": "base:v1",
        "buildStartTime": "2024-05-02T09:13:58.123456Z",
    }


def cluster(spec: dict[str, Any]) -> models.Cluster:
    return models.Cluster.model_validate(
        {
            "apiVersion": models.API_VERSION,
            "kind": "Cluster",
            "metadata": {"name": "c"},
            "spec": spec,
        }
    )


def test_cluster_registry_and_docker_host() -> None:
    full = cluster(
        {
            "defaultRegistry": {
                "host": "localhost:5000",
                "hostFromContainerRuntime": "registry:5000",
                "singleName": "app",
            },
            "connection": {"docker": {"host": "tcp://builder:2375"}},
        }
    )
    assert full.registry == refs.Registry("localhost:5000", "registry:5000", "app")
    assert full.docker_host == "tcp://builder:2375"
    bare = cluster({})
    assert bare.registry is None
    assert bare.docker_host == ""


@pytest.mark.parametrize(
    ("registry", "field", "message"),
    [  # Tilt's RegistryHosting.Validate, field by field
        ({"host": ""}, "host", "Required value"),
        ({"singleName": "app"}, "host", "Required value"),
        ({"hostFromContainerRuntime": "registry:5000"}, "host", "Required value"),
        (
            {"host": "invalid"},
            "host",
            'Invalid value: "invalid": repository name must be canonical',
        ),
        ({"host": "foo/bar/baz"}, "host", 'Invalid value: "foo/bar/baz": repository name'),
        (
            {"host": "localhost:5000", "hostFromContainerRuntime": "registry"},
            "hostFromContainerRuntime",
            'Invalid value: "registry": repository name must be canonical',
        ),
    ],
)
def test_cluster_registry_refused_as_tilt_refuses_it(
    registry: dict[str, str], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        cluster({"defaultRegistry": registry})
    (error,) = caught.value.errors()
    assert error["loc"] == ("spec", "defaultRegistry", field)
    assert error["msg"].removeprefix("Value error, ").startswith(message)


def test_cluster_registry_hosts_tilt_accepts() -> None:
    ecr = "aws_account_id.dkr.ecr.us-east-1.amazonaws.com"
    for host in ("localhost:5000", "gcr.io/my-project", "[::1]:5000", ecr):
        assert cluster({"defaultRegistry": {"host": host}}).registry == refs.Registry(host)


def test_every_kind_has_a_model_and_lists_name_their_items() -> None:
    assert set(models.MODELS) == {"CmdImage", "ImageMap", "FileWatch", "Cluster"}
    assert models.LIST_KINDS == {"CmdImageList": "CmdImage", "ImageMapList": "ImageMap"}
    for kind, model in models.MODELS.items():
        with pytest.raises(ValidationError):
            model.model_validate({"apiVersion": "v1", "kind": kind, "metadata": {"name": "x"}})


@pytest.mark.parametrize(
    ("value", "on"), [("true", True), (True, True), ("True", True), ("false", False), (1, False)]
)
def test_the_registry_cache_annotation_reads_true_quoted_or_not(value: object, on: bool) -> None:
    found = models.Cluster.model_validate(
        {
            "apiVersion": "tilt.dev/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": "default", "annotations": {models.REGISTRY_CACHE: value}},
        }
    )
    assert found.registry_cache is on
