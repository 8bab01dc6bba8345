"""The real engine and registry behind the fixtures in conftest.py do what the suite relies on.

Builds with the legacy builder (RUN included), runs a container, tags into the registry,
pushes, and reads the registry's catalog back: the same path a CmdImage build takes.
"""

import io
import json
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest

DOCKERFILE = """\
FROM cmdimage-watch/busybox:latest
RUN echo hi > /hi
"""


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@pytest.fixture
def built_image(docker_client: docker.DockerClient, base_image: str) -> Iterator[str]:
    """A freshly built image with a unique tag, removed from the engine afterwards."""
    ref = f"cmdimage-watch-test/services:{uuid.uuid4().hex[:12]}"
    docker_client.images.build(
        fileobj=io.BytesIO(DOCKERFILE.encode()), tag=ref, network_mode="none", rm=True
    )
    yield ref
    docker_client.images.remove(ref, force=True)


def test_build_runs_steps_in_the_base_image(
    docker_client: docker.DockerClient, built_image: str
) -> None:
    output = docker_client.containers.run(
        built_image, ["cat", "/hi"], network_mode="none", remove=True
    )
    assert output == b"hi\n"


def test_push_lands_in_the_registry(
    docker_client: docker.DockerClient, registry_host: str, built_image: str
) -> None:
    tag = built_image.rsplit(":", 1)[1]
    name = "cmdimage-watch-test/services"
    repository = f"{registry_host}/{name}"
    assert docker_client.images.get(built_image).tag(repository, tag=tag)
    try:
        events = list(docker_client.images.push(repository, tag=tag, stream=True, decode=True))
    finally:
        docker_client.images.remove(f"{repository}:{tag}")
    # A failed push does not raise: the error is one of the streamed events.
    errors = [event for event in events if "error" in event or "errorDetail" in event]
    assert errors == []
    catalog = get_json(f"http://{registry_host}/v2/_catalog?n=1000")
    assert name in catalog["repositories"]
    tags = get_json(f"http://{registry_host}/v2/{name}/tags/list")
    assert tag in tags["tags"]
