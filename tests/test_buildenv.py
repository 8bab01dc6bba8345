"""What a build is told, as pure functions: the engine address, decided in one place."""

from __future__ import annotations

from pathlib import Path

from cmdimage_watch.buildenv import docker_host
from tests.helpers import cluster, cmdimage, index_of, write


def _host(tmp_path: Path, *docs: str, environ: dict[str, str]) -> str:
    index = index_of(write(tmp_path / "images.yaml", *docs))
    image = index.images["app"]
    return docker_host(image, index.cluster(image), environ)


def test_the_clusters_engine_wins_then_spec_env_then_the_daemons(tmp_path: Path) -> None:
    daemon = {"DOCKER_HOST": "unix:///daemon.sock"}
    spec_env = ["DOCKER_HOST=tcp://spec:2375"]
    on_cluster = cluster(connection={"docker": {"host": "tcp://cluster:2375"}})
    assert _host(tmp_path, cmdimage("app"), environ=daemon) == "unix:///daemon.sock"
    assert _host(tmp_path, cmdimage("app", env=spec_env), environ=daemon) == "tcp://spec:2375"
    both = (on_cluster, cmdimage("app", env=spec_env))
    assert _host(tmp_path, *both, environ=daemon) == "tcp://cluster:2375"
    assert _host(tmp_path, cmdimage("app"), environ={}) == ""  # the engine's own default
