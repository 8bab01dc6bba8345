"""A Cluster's `connection.docker.host` moves builds to another engine (SPEC §2): proven with
two real engines, the default one and a second `dockerd` on a loopback TCP port, which
`scripts/services.sh` starts. The build command gets that DOCKER_HOST, and the daemon's own
inspect, retag and push go there too; the first engine never sees the image.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from cmdimage_watch.statusfiles import read_status_file
from tests.conftest import remove_images
from tests.daemon_harness import Watchers, cli, completed, daemon_env, status_of
from tests.helpers import cluster, cmdimage, free_port, write
from tests.helpers.forwarder import Forwarder
from tests.helpers.polling import wait_until

BUILD = (
    'echo "$DOCKER_HOST" > {seen} && docker build --network none -q -t "$EXPECTED_REF" . >/dev/null'
)


@pytest.fixture
def second_client(second_docker_host: str) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=second_docker_host, timeout=60)
    try:
        yield client
    finally:
        client.close()


def tree_for(
    tmp_path: Path, engine: str, registry: str, uid: str, before: str = ""
) -> tuple[Path, Path]:
    """A tree with one image of Cluster `default` on `engine`; the spec file and where its
    command (after the shell code `before`) writes the DOCKER_HOST it was given."""
    root, seen = tmp_path / "tree", tmp_path / "seen"
    app = root / "app"
    app.mkdir(parents=True)
    (app / "Dockerfile").write_text(f"FROM cmdimage-watch/busybox:latest\nRUN echo {uid}\n")
    spec = write(
        app / "app.yaml",
        cluster(defaultRegistry={"host": registry}, connection={"docker": {"host": engine}}),
        cmdimage("app", uid, args=["sh", "-c", before + BUILD.format(seen=seen)]),
    )
    return spec, seen


def test_a_cluster_on_a_second_engine_builds_tags_and_pushes_there(
    tmp_path: Path,
    docker_host: str,
    second_docker_host: str,
    docker_client: docker.DockerClient,
    second_client: docker.DockerClient,
    registry_host: str,
) -> None:
    uid = f"ciw-engine2-{uuid.uuid4().hex[:10]}"
    spec, seen = tree_for(tmp_path, second_docker_host, registry_host, uid)
    try:
        result = cli("build", spec.parent.parent, env=daemon_env(docker_host), timeout=120)

        assert result.returncode == 0, result.stderr
        assert seen.read_text().strip() == second_docker_host
        image_doc = read_status_file(spec.with_name("app.status.yaml"))[1]
        ref = image_doc["status"]["ref"]
        assert ref.startswith(f"{registry_host}/{uid}:tilt-")
        built = second_client.images.get(ref)  # content-tagged in the second engine
        assert ref.endswith(built.id.removeprefix("sha256:")[:16])
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(ref)  # and never in the first
        assert not [t for i in docker_client.images.list() for t in i.tags if uid in t]
        tags_url = f"http://{registry_host}/v2/{uid}/tags/list"
        with urllib.request.urlopen(tags_url, timeout=10) as response:
            pushed = json.load(response)["tags"]
        assert ref.rpartition(":")[2] in pushed  # pushed by the second engine
    finally:
        remove_images(second_client, uid)


def test_a_cluster_engine_that_is_down_is_named_in_the_error(
    tmp_path: Path, docker_host: str, registry_host: str
) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    uid = f"ciw-engine2-{uuid.uuid4().hex[:10]}"
    spec, seen = tree_for(tmp_path, address, registry_host, uid)

    result = cli("build", spec.parent.parent, env=daemon_env(docker_host), timeout=120)

    assert result.returncode == 1
    assert seen.read_text().strip() == address
    error = read_status_file(spec.with_name("app.status.yaml"))[1]["status"]["completed"]["error"]
    assert f"Docker engine at {address} is not reachable: " in error
    assert "Connection refused" in error


def test_an_engine_down_at_start_keeps_the_last_good_ref_and_builds_nothing(
    tmp_path: Path,
    docker_host: str,
    second_docker_host: str,
    second_client: docker.DockerClient,
    registry_host: str,
) -> None:
    """Issue 13 §3: the engine of a Cluster is down when `build` starts. Its image was never
    deleted: the status says the engine is not reachable, keeps its ref and the ImageMap,
    and no command runs; once the engine answers again the image is up to date."""
    host, _, port = second_docker_host.removeprefix("tcp://").rpartition(":")
    forwarder = Forwarder(free_port(), (host, int(port)))
    uid = f"ciw-engine2-{uuid.uuid4().hex[:10]}"
    spec, seen = tree_for(tmp_path, forwarder.address, registry_host, uid)
    env = daemon_env(docker_host)
    forwarder.start()
    try:
        assert cli("build", spec.parent.parent, env=env, timeout=120).returncode == 0
        ref = read_status_file(spec.with_name("app.status.yaml"))[1]["status"]["ref"]
        seen.unlink()  # each run of the command writes it again

        forwarder.stop()
        down = cli("build", spec.parent.parent, env=env, timeout=120)
        docs = read_status_file(spec.with_name("app.status.yaml"))
        value = docs[1]["status"]
        assert value["waiting"]["reason"] == f"engine at {forwarder.address} is not reachable"
        assert value["ref"] == ref
        assert "completed" not in value
        assert not seen.exists()  # nothing built on a guess
        assert down.returncode == 1
        assert f"Docker engine at {forwarder.address} is not reachable" in down.stderr

        forwarder.start()
        back = cli("build", spec.parent.parent, env=env, timeout=120)
        assert back.returncode == 0, back.stderr
        value = read_status_file(spec.with_name("app.status.yaml"))[1]["status"]
        assert value["ref"] == ref and value["completed"]["reason"] == "up to date"
        assert not seen.exists()
    finally:
        forwarder.stop()
        remove_images(second_client, uid)


def test_the_daemon_builds_again_when_the_engine_comes_back(
    tmp_path: Path,
    second_docker_host: str,
    second_client: docker.DockerClient,
    registry_host: str,
    watchers: Watchers,
) -> None:
    """SPEC §7, issue 13 §3, issue 9 §2: the engine stopped mid-build fails that build naming
    the engine; once it answers the build runs again, saying so, while one that failed on its
    own merits waits; the daemon never exits."""
    host, _, port = second_docker_host.removeprefix("tcp://").rpartition(":")
    forwarder = Forwarder(free_port(), (host, int(port)))
    uid = f"ciw-engine2-{uuid.uuid4().hex[:10]}"
    slow = "if [ -e more.txt ]; then sleep 2; fi; "  # a window to stop the engine mid-build
    spec, _ = tree_for(tmp_path, forwarder.address, registry_host, uid, before=slow)
    runs = tmp_path / "bad-runs"
    bad = f"echo run >> {runs}; exit 3"
    bad_image = cmdimage("bad", f"{uid}-bad", args=["sh", "-c", bad], outputMode="remote")
    write(spec.parent.parent / "bad" / "bad.yaml", bad_image)
    forwarder.start()
    try:
        daemon = watchers.start(spec.parent.parent)
        wait_until(lambda: completed(spec, "app").get("reason") == "initial build", "app built")

        (spec.parent / "more.txt").write_text("a change")
        wait_until(lambda: "building" in status_of(spec, "CmdImage", "app"), "app building")
        forwarder.stop()  # mid-build
        down = wait_until(lambda: completed(spec, "app").get("error"), "app to fail")
        assert f"Docker engine at {forwarder.address} is not reachable" in down

        forwarder.start()
        back = wait_until(
            lambda: (
                (done := completed(spec, "app")).get("reason", "").startswith("engine") and done
            ),
            "app to build again once its engine is back",
        )
        assert back["reason"] == f"engine at {forwarder.address} is back"
        assert "error" not in back
        assert f"engine at {forwarder.address} is back: building app" in daemon.output()
        assert runs.read_text().splitlines() == ["run"]  # failed on its own: not retried
        assert daemon.proc.poll() is None
    finally:
        forwarder.stop()
        remove_images(second_client, uid)


def test_a_registry_that_stops_answering_ends_the_push_within_the_bound_then_works_again(
    tmp_path: Path, docker_host: str, docker_client: docker.DockerClient, registry_host: str
) -> None:
    """Issue 13 §3: the registry frozen with SIGSTOP hung the push for ever. Every call to
    the engine has a bound (60 s; 3 s here); then the registry thaws and a build pushes."""
    uid = f"ciw-frozen-{uuid.uuid4().hex[:10]}"
    spec, _ = tree_for(tmp_path, docker_host, registry_host, uid)
    env = daemon_env(docker_host) | {"CMDIMAGE_WATCH_ENGINE_TIMEOUT": "3"}
    services = Path(os.environ.get("CIW_SERVICES_DIR", "/tmp/cmdimage-watch-services"))
    registry = int((services / "registry.pid").read_text())
    os.kill(registry, signal.SIGSTOP)
    try:
        frozen = cli("build", spec.parent.parent, env=env, timeout=120)
    finally:
        os.kill(registry, signal.SIGCONT)
    try:
        assert frozen.returncode == 1
        done = read_status_file(spec.with_name("app.status.yaml"))[1]["status"]["completed"]
        expected = f"to {registry_host} failed: no answer from the engine at {docker_host} within 3"
        assert expected in done["error"]
        thawed = cli("build", spec.parent.parent, env=env, timeout=120)
        assert thawed.returncode == 0, thawed.stderr
    finally:
        remove_images(docker_client, uid)
