"""The registry cache (SPEC §9): a teammate's build reused from the registry.

Two checkouts of the sample in two folders, two real engines, one real registry: the first
builds and shares; the second, started fresh on the other engine, runs none of the commands
whose images the registry holds and ends with the same refs. A command that runs creates
its log (`.cmdimage-watch/logs/NAME.log`), so the logs tell which commands started.
`sample-tool` writes a ref of its own choosing (`outputsImageRefTo`): the registry keeps
that ref in a note beside the image, so the second clone ends with the same ref too.
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
from cmdimage_watch.builder import IMAGE_ID, SCRIPT_REF, Builder
from cmdimage_watch.graph import Index
from cmdimage_watch.models import REGISTRY_CACHE
from cmdimage_watch.statusfiles import read_status_file
from tests.daemon_harness import Watchers
from tests.daemon_harness import cli as run_cli
from tests.helpers import cluster, cmdimage, index_of, write
from tests.helpers.dashboard import sample_copy
from tests.helpers.polling import wait_until

SHARED = ["sample-base", "sample-app", "sample-tool"]  # the registry holds them all


def checkout(into: Path, registry: str, content: str, annotated: bool = False) -> Path:
    """The sample, its Cluster naming the test registry (annotated: the cache is on for
    it), and a greeting and tool no other test built, so that their inputs (and the tool's
    own tag) are new to the registry."""
    root = sample_copy(into)
    doc = cluster(defaultRegistry={"host": registry})
    if annotated:
        doc = doc.replace('"metadata": {"name": "default"}', _annotated())
    write(root / "cluster.yaml", doc)
    (root / "base" / "greeting.txt").write_text(content)
    with (root / "tool" / "tool.sh").open("a") as tool:
        tool.write(f"# {content}")
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

    assert ran(second) == set()  # no command started
    for name in SHARED:
        mine, theirs = status(second, folder(name), name), status(first, folder(name), name)
        assert mine["ref"] == theirs["ref"]
        reason = mine["completed"]["reason"]
        assert reason.startswith("reused from registry (inputs sha256:"), reason
        engine2 = docker.DockerClient(base_url=second_docker_host)
        try:
            engine2.images.get(mine["ref"])  # pulled into the second engine and tagged
        finally:
            engine2.close()
    written = (second / "tool" / "ref.txt").read_text()  # as the tool's script would have
    assert written == status(first, "tool", "sample-tool")["ref"] + "\n"
    # one source changed in the second: that image and what is built from it, nothing else
    (second / "base" / "greeting.txt").write_text(content + "bob's change\n")
    done = run_cli("build", second, "--registry-cache", env=other, timeout=180)
    assert done.returncode == 0, done.stderr
    assert ran(second) == {"sample-base", "sample-app"}
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

        wait_until(reused, "all three images reused", timeout=120)
        daemon.settle()
        assert ran(second) == set()
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


def test_an_output_tag_image_is_reused_and_keeps_its_tag(
    tmp_path: Path,
    env: dict[str, str],
    second_docker_host: str,
    registry_host: str,
) -> None:
    """`outputTag`: the command always builds REF:TAG; reused, the engine has that tag too."""
    uid = f"otag-{uuid.uuid4().hex[:12]}"
    build = 'docker build --network none -q -t "$EXPECTED_REF" . >/dev/null'
    roots = []
    for who in ("alice", "bob"):
        root = tmp_path / who
        write(root / "cluster.yaml", cluster(defaultRegistry={"host": registry_host}))
        write(
            root / "app" / "app.yaml",
            cmdimage("tagged", uid, args=["sh", "-c", build], outputTag="v1"),
        )
        write(root / "app" / "Dockerfile", "FROM cmdimage-watch/busybox:latest\nCOPY id /id\n")
        write(root / "app" / "id", uid)
        roots.append(root)
    first, second = roots
    done = run_cli("build", first, "--registry-cache", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ran(first) == {"tagged"}
    done = run_cli(
        "build", second, "--registry-cache", env=env | {"DOCKER_HOST": second_docker_host}
    )
    assert done.returncode == 0, done.stderr

    assert ran(second) == set()
    mine, theirs = status(second, "app", "tagged"), status(first, "app", "tagged")
    assert mine["ref"] == theirs["ref"]
    assert mine["completed"]["reason"].startswith("reused from registry")
    engine2 = docker.DockerClient(base_url=second_docker_host)
    try:
        assert engine2.images.get(f"{uid}:v1").id == engine2.images.get(mine["ref"]).id
    finally:
        engine2.close()


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


class _Notes:
    """Stands in for `engine.Engines`: a registry holding the image and the note asked for."""

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels, self.calls = labels, list[str]()

    def in_registry(self, host: str, ref: refs.Ref) -> str:
        self.calls.append(f"look up {ref}")
        return "yes"

    def read_note(self, host: str, ref: refs.Ref) -> dict[str, str]:
        self.calls.append(f"read {ref}")
        return self.labels

    def pull(self, host: str, ref: refs.Ref) -> str:
        self.calls.append(f"pull {ref}")
        return "sha256:" + "a" * 64

    def tag(self, host: str, image_id: str, ref: refs.Ref) -> None:
        self.calls.append(f"tag {ref}")


@pytest.mark.parametrize("note", ["hit", "missing", "another image"])
def test_a_scripts_ref_comes_from_the_note_beside_the_image(tmp_path: Path, note: str) -> None:
    spec = write(
        tmp_path / "tool" / "tool.yaml",
        cmdimage("tool", "tool", args=["true"], outputsImageRefTo="ref.txt"),
    )
    registry = write(tmp_path / "c.yaml", cluster(defaultRegistry={"host": "localhost:5000"}))
    index: Index = index_of(spec, registry)
    tag = "in-0123456789abcdef"
    request = buildenv.BuildRequest(
        index.images["tool"], index.clusters["default"], [], datetime.now(UTC), tag
    )
    labels = {
        "hit": {SCRIPT_REF: "tool:src-1", IMAGE_ID: "sha256:" + "a" * 64},
        "missing": {},
        "another image": {SCRIPT_REF: "tool:src-1", IMAGE_ID: "sha256:" + "b" * 64},
    }[note]
    builder = Builder(tmp_path / "logs")
    fake = _Notes(labels)
    builder.__dict__["engines"] = fake
    exp = buildenv.expected(request)
    assert buildenv.reusable(request, exp.registry)
    said: list[str] = []
    sink = logger.add(said.append, level="INFO", format="{level} {message}")
    try:
        result = builder._reuse(request, exp, "")
    finally:
        logger.remove(sink)
    cached = "localhost:5000/tool:in-0123456789abcdef"
    ref_file = tmp_path / "tool" / "ref.txt"
    if note == "hit":
        assert result is not None and result.reused
        assert (result.local_ref.familiar(), result.cluster_ref.familiar()) == ("tool:src-1",) * 2
        assert ref_file.read_text() == "tool:src-1\n"
        pulled = [f"look up {cached}", f"read {cached}-ref", f"pull {cached}"]
        assert fake.calls == [*pulled, "tag docker.io/library/tool:src-1"]
        assert said == []
        return
    assert result is None and not ref_file.exists()
    (line,) = said
    why = {"missing": "is not in the registry cache", "another image": "names another image"}
    assert line == f"INFO tool: {cached}-ref {why[note]}; building\n"
