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
from collections.abc import Iterator
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
from cmdimage_watch.regcache import IMAGE_ID, SCRIPT_REF
from cmdimage_watch.statusfiles import read_status_file
from tests.daemon_harness import Watchers
from tests.daemon_harness import cli as run_cli
from tests.helpers import cluster, cmdimage, index_of, run_async, write
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


def run_on(engine: str, ref: str) -> str:
    """What a container of `ref` prints, run on `engine` without a network."""
    client = docker.DockerClient(base_url=engine)
    try:
        out = client.containers.run(ref, remove=True, network_disabled=True)
    finally:
        client.close()
    return bytes(out).decode()


def cache_tags_in(engine: str, digests: set[str]) -> list[str]:
    """The `in-` and `rf-` tags of these inputs digests that an engine still has."""
    client = docker.DockerClient(base_url=engine)
    try:
        tags = [tag for image in client.images.list() for tag in image.tags]
    finally:
        client.close()
    return [t for t in tags if t.rpartition(":")[2][3:] in digests]


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
    # the reused images run as the teammate's do, on the second engine
    assert run_on(second_docker_host, status(second, "app", "sample-app")["ref"]) == (
        content + "and hello from sample-app\n"
    )
    tool = status(second, "tool", "sample-tool")["ref"]
    assert run_on(second_docker_host, tool) == "sample-tool says hi\n"
    written = (second / "tool" / "ref.txt").read_text()  # as the tool's script would have
    assert written == status(first, "tool", "sample-tool")["ref"] + "\n"
    digests = {status(second, folder(n), n)["completed"]["reason"][-17:-1] for n in SHARED}
    assert len(digests) == len(SHARED)
    for engine in (docker_host, second_docker_host):  # the sharer's and the reuser's
        assert cache_tags_in(engine, digests) == []
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


# --- the fall-back, the notes and what is left in the engine, as units: the engine scripted -


IMAGE_A, IMAGE_B = "sha256:" + "a" * 64, "sha256:" + "b" * 64
CACHED = "localhost:5000/{}:in-0123456789abcdef"
NOTE = "localhost:5000/{}:rf-0123456789abcdef"


class _Engines:
    """Stands in for `engine.Engines`: a registry that holds the image (and the note given)
    or fails in the way asked; every call recorded."""

    def __init__(self, fail: str = "", note: dict[str, str] | None = None) -> None:
        self.fail, self.labels, self.calls = fail, note or {}, list[str]()

    def in_registry(self, host: str, ref: refs.Ref) -> str:
        self.calls.append(f"look up {ref}")
        if self.fail == "down":
            raise buildenv.BuildError("could not look up it: connection refused")
        return {
            "miss": "is not in the registry cache",
            "platform": "is in the registry cache, but not for linux/arm64",
        }.get(self.fail, "yes")

    def read_note(self, host: str, ref: refs.Ref) -> dict[str, str]:
        self.calls.append(f"read {ref}")
        return self.labels

    def pull(self, host: str, ref: refs.Ref) -> str:
        self.calls.append(f"pull {ref}")
        if self.fail == "pull":
            raise buildenv.BuildError("pulling it failed: unauthorized")
        return IMAGE_A

    def note(self, host: str, ref: refs.Ref, labels: dict[str, str]) -> None:
        self.calls.append(f"note {ref} {sorted(labels.items())}")

    def tag(self, host: str, image_id: str, ref: refs.Ref) -> None:
        self.calls.append(f"tag {ref}")

    def push(self, host: str, ref: refs.Ref, registry: refs.Registry) -> None:
        self.calls.append(f"push {ref}")
        if self.fail == "push":
            raise buildenv.BuildError(f"Pushing {ref} failed: unauthorized")

    def untag(self, host: str, ref: refs.Ref) -> None:
        self.calls.append(f"untag {ref}")
        if self.fail == "untag":
            raise buildenv.BuildError(f"untagging {ref} failed: conflict")


def _scripted(
    tmp_path: Path, engines: _Engines, **spec: Any
) -> tuple[Builder, buildenv.BuildRequest]:
    """A builder on `engines` and a request for image `app` (with `spec`) under a registry."""
    spec_file = write(tmp_path / "app" / "app.yaml", cmdimage("app", "app", **spec))
    registry = write(tmp_path / "c.yaml", cluster(defaultRegistry={"host": "localhost:5000"}))
    index: Index = index_of(spec_file, registry)
    started = datetime.now(UTC)
    request = buildenv.BuildRequest(
        index.images["app"], index.clusters["default"], [], started, "0123456789abcdef"
    )
    assert buildenv.reusable(request, buildenv.expected(request).registry)
    builder = Builder(tmp_path / "logs")
    builder.__dict__["engines"] = engines  # the cached_property's slot
    return builder, request


@pytest.fixture
def said() -> Iterator[list[str]]:
    """The log lines at INFO and above, `LEVEL message`, as they come."""
    lines: list[str] = []
    sink = logger.add(lines.append, level="INFO", format="{level} {message}")
    yield lines
    logger.remove(sink)


@pytest.mark.parametrize("fail", ["miss", "platform", "down", "pull"])
def test_a_miss_or_a_fault_of_the_registry_means_building(
    tmp_path: Path, said: list[str], fail: str
) -> None:
    fake = _Engines(fail)
    builder, request = _scripted(tmp_path, fake)
    assert builder._reuse(request, buildenv.expected(request), "") is None
    (line,) = said
    why = {
        "miss": f"INFO app: {CACHED.format('app')} is not in the registry cache",
        "platform": f"INFO app: {CACHED.format('app')} is in the registry "
        "cache, but not for linux/arm64",
        "down": "WARNING app: the registry cache could not be used (could not look up it",
        "pull": "WARNING app: the registry cache could not be used (pulling it failed",
    }[fail]
    assert line.startswith(why) and line.rstrip().endswith("building"), line
    looked = [f"look up {CACHED.format('app')}"]
    pulled = [f"pull {CACHED.format('app')}"] if fail == "pull" else []
    assert fake.calls == looked + pulled


def test_a_reused_output_tag_image_gets_its_content_tag_and_its_tag(
    tmp_path: Path, said: list[str]
) -> None:
    fake = _Engines()
    builder, request = _scripted(tmp_path, fake, outputTag="v1")
    result = builder._reuse(request, buildenv.expected(request), "")
    assert result is not None and result.reused and result.image_id == IMAGE_A
    content = f"localhost:5000/app:{refs.content_tag(IMAGE_A)}"
    assert result.local_ref.familiar() == content
    cached = CACHED.format("app")
    assert fake.calls == [
        f"look up {cached}",
        f"pull {cached}",
        f"tag {content}",
        "tag docker.io/library/app:v1",
        f"untag {cached}",  # no `in-` tag left in the engine
    ]
    assert said == []


@pytest.mark.parametrize("note", ["hit", "missing", "another image"])
def test_a_scripts_ref_comes_from_the_note_beside_the_image(
    tmp_path: Path, said: list[str], note: str
) -> None:
    labels = {
        "hit": {SCRIPT_REF: "localhost:5000/tool:src-1", IMAGE_ID: IMAGE_A},
        "missing": {},
        "another image": {SCRIPT_REF: "localhost:5000/tool:src-1", IMAGE_ID: IMAGE_B},
    }[note]
    fake = _Engines(note=labels)
    builder, request = _scripted(tmp_path, fake, outputsImageRefTo="ref.txt")
    result = builder._reuse(request, buildenv.expected(request), "")
    cached, noted, ref_file = CACHED.format("app"), NOTE.format("app"), tmp_path / "app" / "ref.txt"
    looked = [f"look up {cached}", f"read {noted}"]
    if note == "missing":
        assert fake.calls == looked
    elif note == "another image":  # pulled, and the pull's `in-` tag taken off again
        assert fake.calls == [*looked, f"pull {cached}", f"untag {cached}"]
    else:
        assert result is not None and result.reused
        assert result.local_ref.familiar() == "localhost:5000/tool:src-1"
        assert ref_file.read_text() == "localhost:5000/tool:src-1\n"
        assert fake.calls == [
            *looked,
            f"pull {cached}",
            "tag localhost:5000/tool:src-1",
            "push localhost:5000/tool:src-1",  # under the registry: pushed, as a build does
            f"untag {cached}",
        ]
        assert said == []
        return
    assert result is None and not ref_file.exists()
    why = {"missing": "is not in the registry cache", "another image": "names another image"}
    assert said == [f"INFO app: {noted} {why[note]}; building\n"]


@pytest.mark.parametrize("script", [False, True], ids=["content-tagged", "outputsImageRefTo"])
def test_sharing_pushes_the_image_then_its_note_and_leaves_neither_tag(
    tmp_path: Path, said: list[str], script: bool
) -> None:
    fake = _Engines()
    builder, request = _scripted(tmp_path, fake, **({"outputsImageRefTo": "r"} if script else {}))
    built = refs.parse_ref("tool:src-1")
    run_async(builder.share(request, buildenv.BuildResult(built, built, image_id=IMAGE_A)))
    cached, noted = CACHED.format("app"), NOTE.format("app")
    shared = [f"tag {cached}", f"push {cached}", f"untag {cached}"]
    labels = sorted({SCRIPT_REF: "tool:src-1", IMAGE_ID: IMAGE_A}.items())
    noting = [f"note {noted} {labels}", f"push {noted}", f"untag {noted}"]
    assert fake.calls == shared + (noting if script else [])
    assert said == []


def test_an_untag_that_fails_neither_fails_the_reuse_nor_the_share(
    tmp_path: Path, said: list[str]
) -> None:
    fake = _Engines("untag")
    builder, request = _scripted(tmp_path, fake)
    result = builder._reuse(request, buildenv.expected(request), "")
    assert result is not None and result.reused
    built = refs.parse_ref("app:tilt-0123456789abcdef")
    run_async(builder.share(request, buildenv.BuildResult(built, built, image_id=IMAGE_A)))
    assert fake.calls[-1] == f"untag {CACHED.format('app')}"  # tried, failed, let be
    assert said == []


def test_a_share_whose_push_fails_untags_and_warns_once(tmp_path: Path, said: list[str]) -> None:
    fake = _Engines("push")
    builder, request = _scripted(tmp_path, fake)
    built = refs.parse_ref("app:tilt-0123456789abcdef")
    run_async(builder.share(request, buildenv.BuildResult(built, built, image_id=IMAGE_A)))
    cached = CACHED.format("app")
    assert fake.calls == [f"tag {cached}", f"push {cached}", f"untag {cached}"]
    (line,) = said
    assert line.startswith(f"WARNING app: not shared in the registry cache: Pushing {cached}")
