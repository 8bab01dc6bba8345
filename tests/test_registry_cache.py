"""The registry cache (SPEC §9): a teammate's build reused from the registry.

Two checkouts of the sample in two folders, two real engines, one real registry: the first
builds and shares; the second, started fresh on the other engine, runs none of the commands
whose images the registry holds and ends with the same refs. A command that runs creates
its log (`.cmdimage-watch/logs/NAME.log`), so the logs tell which commands started.
`sample-tool` writes a ref of its own choosing that is never pushed (`outputsImageRefTo`):
the registry cannot stand in for it, and it builds on both.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import pytest
from loguru import logger

from cmdimage_watch import buildenv, refs
from cmdimage_watch.builder import Builder
from cmdimage_watch.graph import Index
from cmdimage_watch.models import REGISTRY_CACHE
from cmdimage_watch.statusfiles import read_status_file
from tests.daemon_harness import Watchers
from tests.daemon_harness import cli as run_cli
from tests.helpers import cluster, index_of, write
from tests.helpers.dashboard import sample_copy
from tests.helpers.polling import wait_until

SHARED = ["sample-base", "sample-app"]  # pushed with a content tag: the registry holds them


def checkout(into: Path, registry: str, content: str, annotated: bool = False) -> Path:
    """The sample, its Cluster naming the test registry (annotated: the cache is on for
    it), and a greeting no other test built, so that its inputs are new to the registry."""
    root = sample_copy(into)
    doc = cluster(defaultRegistry={"host": registry})
    if annotated:
        doc = doc.replace('"metadata": {"name": "default"}', _annotated())
    write(root / "cluster.yaml", doc)
    (root / "base" / "greeting.txt").write_text(content)
    return root


def _annotated() -> str:
    return f'"metadata": {{"name": "default", "annotations": {{"{REGISTRY_CACHE}": "true"}}}}'


def status(root: Path, folder: str, name: str) -> dict[str, Any]:
    """The status of `name` in its status file; {} while there is none."""
    docs = read_status_file(root / folder / f"{folder}.status.yaml")
    found: dict[str, Any] = next(
        (d["status"] for d in docs if d["metadata"]["name"] == name and d.get("status")), {}
    )
    return found


def ran(root: Path) -> set[str]:
    logs = root / ".cmdimage-watch" / "logs"
    return {p.name.removesuffix(".log") for p in logs.glob("*.log") if ".prev" not in p.name}


def folder(name: str) -> str:
    return name.removeprefix("sample-")


def test_a_teammates_clone_builds_nothing_the_registry_holds(
    tmp_path: Path,
    env: dict[str, str],
    docker_host: str,
    second_docker_host: str,
    registry_host: str,
) -> None:
    content = f"hello {uuid.uuid4().hex}\n"
    first = checkout(tmp_path / "alice", registry_host, content)
    done = run_cli("build", first, "--registry-cache", "-v", env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    assert ran(first) == {"sample-base", "sample-app", "sample-tool"}
    assert "is not in the registry cache; building" in done.stderr

    second = checkout(tmp_path / "bob", registry_host, content)
    other = env | {"DOCKER_HOST": second_docker_host}
    done = run_cli("build", second, "--registry-cache", env=other, timeout=180)
    assert done.returncode == 0, done.stderr

    assert ran(second) == {"sample-tool"}  # no command of the shared images started
    for name in SHARED:
        mine, theirs = status(second, folder(name), name), status(first, folder(name), name)
        assert mine["ref"] == theirs["ref"]
        reason = mine["completed"]["reason"]
        assert reason.startswith("reused from registry (inputs sha256:"), reason
        engine2 = docker.DockerClient(base_url=second_docker_host)
        try:
            engine2.images.get(mine["ref"])  # pulled into the second engine, content-tagged
        finally:
            engine2.close()
    # one source changed in the second: that image and what is built from it, nothing else
    (second / "base" / "greeting.txt").write_text(content + "bob's change\n")
    done = run_cli("build", second, "--registry-cache", env=other, timeout=180)
    assert done.returncode == 0, done.stderr
    assert ran(second) == {"sample-base", "sample-app", "sample-tool"}  # the first two: new
    logs = second / ".cmdimage-watch" / "logs"
    assert not (logs / "sample-tool.prev.log").exists()  # up to date: its log not rotated
    base = status(second, "base", "sample-base")
    assert base["completed"]["reason"] == "changed files: greeting.txt"
    assert base["ref"] != status(first, "base", "sample-base")["ref"]
    app = status(second, "app", "sample-app")
    assert app["completed"]["reason"] == "image map sample-base updated"


def test_a_daemon_on_an_annotated_cluster_reuses_them_too(
    tmp_path: Path,
    env: dict[str, str],
    second_docker_host: str,
    registry_host: str,
) -> None:
    """The second checkout is a daemon, the cache switched on by the Cluster's annotation."""
    content = f"hello {uuid.uuid4().hex}\n"
    first = checkout(tmp_path / "alice", registry_host, content)
    done = run_cli("build", first, "--registry-cache", env=env, timeout=180)
    assert done.returncode == 0, done.stderr

    second = checkout(tmp_path / "bob", registry_host, content, annotated=True)
    watchers = Watchers(tmp_path / "logs", env | {"DOCKER_HOST": second_docker_host})
    try:
        daemon = watchers.start(second)

        def reused() -> bool:
            return all(
                status(second, folder(n), n)
                .get("completed", {})
                .get("reason", "")
                .startswith("reused from registry")
                for n in SHARED
            )

        wait_until(reused, "both shared images reused", timeout=120)
        daemon.settle()
        assert ran(second) == {"sample-tool"}
        assert daemon.problems() == []

        # a trigger asks for a build: the command runs, though the registry holds it
        triggered = run_cli("trigger", second, "sample-base", env=env)
        assert triggered.returncode == 0, triggered.stderr
        wait_until(
            lambda: (
                status(second, "base", "sample-base").get("completed", {}).get("reason")
                == "manual trigger"
            ),
            "the triggered build",
            timeout=120,
        )
        assert "sample-base" in ran(second)
    finally:
        watchers.stop_all()


# --- the fall-back, as a unit: the engine seam scripted ----------------------------------


class _Engines:
    """Stands in for `engine.Engines`: a registry that fails in the way asked."""

    def __init__(self, fail: str) -> None:
        self.fail, self.calls = fail, list[str]()

    def in_registry(self, host: str, ref: refs.Ref) -> str:
        self.calls.append(f"look up {ref}")
        if self.fail == "down":
            raise buildenv.BuildError("could not look up it: connection refused")
        return {
            "miss": "is not in the registry cache",
            "platform": "is in the registry cache, but not for linux/arm64",
        }.get(self.fail, "yes")

    def pull(self, host: str, ref: refs.Ref) -> str:
        self.calls.append(f"pull {ref}")
        raise buildenv.BuildError("pulling it failed: unauthorized")


@pytest.mark.parametrize("fail", ["miss", "platform", "down", "pull"])
def test_a_miss_or_a_fault_of_the_registry_means_building(tmp_path: Path, fail: str) -> None:
    spec = write(
        tmp_path / "app" / "app.yaml",
        '{"apiVersion": "tilt.dev/v1alpha1", "kind": "CmdImage", "metadata": {"name": "app"},'
        ' "spec": {"ref": "app", "args": ["true"]}}',
    )
    registry = write(tmp_path / "c.yaml", cluster(defaultRegistry={"host": "localhost:5000"}))
    index: Index = index_of(spec, registry)
    tag = "in-0123456789abcdef"
    request = buildenv.BuildRequest(
        index.images["app"], index.clusters["default"], [], datetime.now(UTC), tag
    )
    builder = Builder(tmp_path / "logs")
    fake = _Engines(fail)
    builder.__dict__["engines"] = fake  # the cached_property's slot
    exp = buildenv.expected(request)
    assert buildenv.reusable(request, exp.registry)
    said: list[str] = []
    sink = logger.add(said.append, level="INFO", format="{level} {message}")
    try:
        assert builder._reuse(request, exp, "") is None
    finally:
        logger.remove(sink)
    (line,) = said
    why = {
        "miss": "INFO app: localhost:5000/app:in-0123456789abcdef is not in the registry cache",
        "platform": "INFO app: localhost:5000/app:in-0123456789abcdef is in the registry "
        "cache, but not for linux/arm64",
        "down": "WARNING app: the registry cache could not be used (could not look up it",
        "pull": "WARNING app: the registry cache could not be used (pulling it failed",
    }[fail]
    assert line.startswith(why) and line.rstrip().endswith("building"), line
    looked = ["look up localhost:5000/app:in-0123456789abcdef"]
    pulled = ["pull localhost:5000/app:in-0123456789abcdef"] if fail == "pull" else []
    assert fake.calls == looked + pulled
