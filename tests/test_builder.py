"""One build against the real Docker engine and registry: tags, output modes, env, errors, stop.

Each test writes a tiny build context (`FROM cmdimage-watch/busybox` + `COPY`) and a spec file
into tmp_path, loads it as the daemon does (`load_spec_file` + `build_index`, so paths resolve
against the spec's folder), runs `Builder.build` on a fresh event loop, and checks the result, the
engine, the registry, the log and the command's environment exactly. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import psutil
import pytest

from cmdimage_watch import models
from cmdimage_watch.builder import Builder, BuildError, BuildRequest, BuildResult
from cmdimage_watch.graph import Index
from tests.conftest import remove_images
from tests.helpers import cluster, cmdimage, index_of, run_async, write
from tests.helpers.polling import until, wait_until
from tests.helpers.processes import group_members

T = TypeVar("T")
STARTED = datetime(2026, 11, 26, 12, 0, 0, 250000, tzinfo=UTC)
UNIX = int(STARTED.timestamp())
BUILD_TAG = f"tilt-build-{UNIX}"
DOCKER_BUILD = 'docker build --network none -q -t "$EXPECTED_REF" . >/dev/null'
SAVE_ENV = 'env -0 > "$OUT/env"'
BUILD_AND_SAVE_ENV = ["sh", "-c", f"{SAVE_ENV} && {DOCKER_BUILD}"]
SAVE_ARGV = """\
import json, os, sys
with open(os.path.join(os.environ["OUT"], "argv.json"), "w") as f:
    json.dump({"argv": sys.argv[1:], "cwd": os.getcwd()}, f)
"""
ENGINE_HINT = (
    ". Start it, or point DOCKER_HOST (or the Cluster's spec.connection.docker.host) at a "
    "running engine"
)


@dataclass
class Project:
    """A spec folder with a build context, a folder for what commands report, and builders."""

    root: Path
    out: Path
    uid: str  # in every image name, so tests never share (or remove) each other's images
    docker_host: str
    base_image: str
    builders: list[Builder] = field(default_factory=list)

    def context(self) -> None:
        """A build context in the spec's folder, with content (so an image id) of its own."""
        dockerfile = f"FROM {self.base_image}\nCOPY content.txt /content.txt\n"
        (self.root / "Dockerfile").write_text(dockerfile)
        (self.root / "content.txt").write_text(f"{self.uid}\n")

    def load(self, *docs: str) -> Index:
        return index_of(write(self.root / "images.yaml", *docs))

    def builder(self, **kwargs: Any) -> Builder:
        daemon_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("EXPECTED_", "TILT_"))
        }
        daemon_env.pop("REGISTRY_HOST", None)
        environ = {**daemon_env, "DOCKER_HOST": self.docker_host, "DOCKER_BUILDKIT": "0"}
        environ["OUT"] = str(self.out)
        environ |= kwargs.pop("environ", {})
        built = Builder(self.root.parent / "logs", environ=environ, **kwargs)
        self.builders.append(built)
        return built

    def env(self) -> dict[str, str]:
        """The environment the last command saved with SAVE_ENV."""
        entries = (self.out / "env").read_text().split("\0")
        return dict(entry.split("=", 1) for entry in entries if entry)


@pytest.fixture
def project(
    tmp_path: Path, docker_host: str, docker_client: docker.DockerClient, base_image: str
) -> Iterator[Project]:
    out = tmp_path / "out"
    out.mkdir()
    uid = f"ciw-test-{uuid.uuid4().hex[:10]}"
    proj = Project(tmp_path / "project", out, uid, docker_host, base_image)
    proj.root.mkdir()
    yield proj
    for built in proj.builders:
        built.close()
    remove_images(docker_client, uid)


def request(
    index: Index,
    name: str,
    maps: list[tuple[str, models.ImageMapStatus]] | None = None,
    started: datetime = STARTED,
) -> BuildRequest:
    image = index.images[name]
    return BuildRequest(image, index.cluster(image), maps or [], started)


def run(builder: Builder, req: BuildRequest) -> BuildResult:
    return run_async(builder.build(req))


def failure(builder: Builder, req: BuildRequest) -> str:
    with pytest.raises(BuildError) as info:
        run(builder, req)
    return str(info.value)


def content_tag(client: docker.DockerClient, ref: str) -> str:
    image_id: str = client.images.get(ref).id
    assert image_id.startswith("sha256:")
    return f"tilt-{image_id.removeprefix('sha256:')[:16]}"


def local_tags(client: docker.DockerClient, repository: str) -> list[str]:
    return sorted(tag for image in client.images.list(name=repository) for tag in image.tags)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def catalog(registry: str) -> list[str]:
    """Every repository of the registry, page by page (it serves at most 1000 at a time)."""
    found: list[str] = []
    while True:
        last = f"&last={found[-1]}" if found else ""
        page: list[str] = get_json(f"http://{registry}/v2/_catalog?n=1000{last}")["repositories"]
        found.extend(page)
        if len(page) < 1000:
            return found


def registry_tags(registry: str, repository: str) -> list[str] | None:
    """The tags the registry holds for `repository`; None when it has no such repository."""
    try:
        tags: list[str] = get_json(f"http://{registry}/v2/{repository}/tags/list")["tags"]
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 404:
            return None
        raise
    return sorted(tags)


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- tag modes --------------------------------------------------------------------------


def test_default_mode_expects_a_build_time_tag_and_retags_by_content(
    project: Project, docker_client: docker.DockerClient
) -> None:
    project.context()
    index = project.load(cmdimage("app", project.uid, args=BUILD_AND_SAVE_ENV))
    builder = project.builder()

    result = run(builder, request(index, "app"))

    expected = f"{project.uid}:{BUILD_TAG}"
    assert project.env()["EXPECTED_REF"] == expected
    tag = content_tag(docker_client, expected)
    assert result.local_ref.familiar() == f"{project.uid}:{tag}"
    assert result.cluster_ref == result.local_ref
    assert content_tag(docker_client, result.local_ref.familiar()) == tag

    later = run(builder, request(index, "app", started=STARTED + timedelta(seconds=7)))

    assert project.env()["EXPECTED_REF"] == f"{project.uid}:tilt-build-{UNIX + 7}"
    assert later == result  # identical content keeps its tag
    assert local_tags(docker_client, project.uid) == sorted(
        [expected, f"{project.uid}:tilt-build-{UNIX + 7}", f"{project.uid}:{tag}"]
    )


def test_output_tag_is_expected_without_the_registry_and_pushed_by_content(
    project: Project, docker_client: docker.DockerClient, registry_host: str
) -> None:
    project.context()
    index = project.load(
        cluster(defaultRegistry={"host": registry_host}),
        cmdimage("app", project.uid, args=BUILD_AND_SAVE_ENV, outputTag="v1"),
    )

    result = run(project.builder(), request(index, "app"))

    env = project.env()
    assert (env["EXPECTED_REF"], env["EXPECTED_TAG"]) == (f"{project.uid}:v1", "v1")
    assert env["EXPECTED_IMAGE"] == f"library/{project.uid}"
    tag = content_tag(docker_client, f"{project.uid}:v1")
    assert result.local_ref.familiar() == f"{registry_host}/{project.uid}:{tag}"
    assert result.cluster_ref == result.local_ref
    assert registry_tags(registry_host, project.uid) == [tag]


def test_outputs_image_ref_to_reads_the_file_and_does_not_retag(
    project: Project, docker_client: docker.DockerClient
) -> None:
    project.context()
    ref_file = project.root / "out" / "ref.txt"
    ref_file.parent.mkdir()
    ref_file.write_text("stale:from-an-earlier-run\n")
    script = (
        'test ! -e out/ref.txt || exit 9; docker build --network none -q -t "$MY_REF" . '
        '>/dev/null && printf "  %s \\n\\n" "$MY_REF" > out/ref.txt'
    )
    index = project.load(
        cmdimage(
            "app",
            project.uid,
            args=["sh", "-c", script],
            env=[f"MY_REF={project.uid}:custom"],
            outputsImageRefTo="out/ref.txt",
        )
    )

    result = run(project.builder(), request(index, "app"))

    assert result.local_ref.familiar() == f"{project.uid}:custom"
    assert result.cluster_ref == result.local_ref
    assert local_tags(docker_client, project.uid) == [f"{project.uid}:custom"]


@pytest.mark.parametrize("path", ["", "/team"])  # a host may hold a path: gcr.io/my-project
def test_a_script_ref_under_the_registry_is_pushed_and_pulled_from_the_cluster_host(
    project: Project, docker_client: docker.DockerClient, registry_host: str, path: str
) -> None:
    """As Tilt does: the ref the script wrote is pushed when it names the Cluster's
    registry, never retagged, and the cluster pulls it from hostFromContainerRuntime."""
    project.context()
    repo = f"{path.lstrip('/')}/{project.uid}".lstrip("/")
    ref = f"{registry_host}/{repo}:scripted"
    script = 'docker build --network none -q -t "$MY_REF" . >/dev/null && echo "$MY_REF" > ref.txt'
    host, in_cluster = registry_host + path, "registry.cluster:5000" + path
    registry = {"host": host, "hostFromContainerRuntime": in_cluster}
    index = project.load(
        cluster(defaultRegistry=registry),
        cmdimage(
            "app",
            project.uid,
            args=["sh", "-c", script],
            env=[f"MY_REF={ref}"],
            outputsImageRefTo="ref.txt",
        ),
    )

    result = run(project.builder(), request(index, "app"))

    assert result.local_ref.familiar() == ref
    assert result.cluster_ref.familiar() == f"{in_cluster}/{project.uid}:scripted"
    assert registry_tags(registry_host, repo) == ["scripted"]
    assert local_tags(docker_client, f"{registry_host}/{repo}") == [ref]


def test_outputs_image_ref_to_file_is_removed_before_the_run(project: Project) -> None:
    index = project.load(cmdimage("app", project.uid, outputsImageRefTo="ref.txt"))
    ref_file = project.root / "ref.txt"
    ref_file.write_text(f"{project.uid}:from-an-earlier-run\n")

    message = failure(project.builder(), request(index, "app"))

    assert message == (
        f'Custom build "true" succeeded, but it should have written the image ref it built to '
        f"{ref_file} (outputsImageRefTo), and that file cannot be read: [Errno 2] No such file "
        f"or directory: '{ref_file}'"
    )


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("not a ref!!", "invalid reference format"),
        ("no-tag-here", "'no-tag-here' has no tag: expected a reference like name:tag"),
        ("Upper:v1", "invalid reference format: repository name (library/Upper) must be lowercase"),
    ],
)
def test_outputs_image_ref_to_with_bad_content_says_what_to_write(
    project: Project, content: str, why: str
) -> None:
    script = 'printf "%s\\n" "$CONTENT" > ref.txt'
    index = project.load(
        cmdimage(
            "app",
            project.uid,
            args=["sh", "-c", script],
            env=[f"CONTENT={content}"],
            outputsImageRefTo="ref.txt",
        )
    )

    message = failure(project.builder(), request(index, "app"))

    assert message == (
        f"Custom build {json.dumps(script)} wrote {content!r} to {project.root / 'ref.txt'} "
        "(outputsImageRefTo); it should write one image ref with a tag, like "
        f"registry.example.com/app:v1 ({why})"
    )


# --- output modes and registry rewriting ------------------------------------------------


@pytest.mark.parametrize("host_from_runtime", ["", "registry.kind:5000"])
def test_registry_rewrites_the_name_and_the_content_tag_is_pushed(
    project: Project, docker_client: docker.DockerClient, registry_host: str, host_from_runtime: str
) -> None:
    project.context()
    registry = {"host": registry_host, "hostFromContainerRuntime": host_from_runtime}
    index = project.load(
        cluster(defaultRegistry=registry),
        cmdimage("app", f"gcr.io/{project.uid}/bar", args=BUILD_AND_SAVE_ENV),
    )

    result = run(project.builder(), request(index, "app"))

    escaped = f"gcr.io_{project.uid}_bar"
    expected = f"{registry_host}/{escaped}:{BUILD_TAG}"
    assert project.env()["EXPECTED_REF"] == expected
    tag = content_tag(docker_client, expected)
    assert result.local_ref.familiar() == f"{registry_host}/{escaped}:{tag}"
    cluster_host = host_from_runtime or registry_host
    assert result.cluster_ref.familiar() == f"{cluster_host}/{escaped}:{tag}"
    assert escaped in catalog(registry_host)
    assert registry_tags(registry_host, escaped) == [tag]


def test_single_name_puts_every_image_in_one_repository(
    project: Project, docker_client: docker.DockerClient, registry_host: str
) -> None:
    project.context()
    single = f"{project.uid}-all"
    index = project.load(
        cluster(defaultRegistry={"host": registry_host, "singleName": single}),
        cmdimage("app", f"gcr.io/foo/bar-{project.uid}", args=BUILD_AND_SAVE_ENV),
    )

    result = run(project.builder(), request(index, "app"))

    env = project.env()
    expected = f"{registry_host}/{single}:bar-{project.uid}-{BUILD_TAG}"
    assert (env["EXPECTED_REF"], env["EXPECTED_IMAGE"]) == (expected, single)
    assert env["EXPECTED_TAG"] == f"bar-{project.uid}-{BUILD_TAG}"
    tag = f"bar-{project.uid}-{content_tag(docker_client, expected)}"
    assert result.local_ref.familiar() == f"{registry_host}/{single}:{tag}"
    assert registry_tags(registry_host, single) == [tag]


@pytest.mark.parametrize(
    "spec",
    [{"outputMode": "local-docker-and-remote"}, {"clusterNeeds": "base-image"}],
    ids=["local-docker-and-remote", "base-image"],
)
def test_images_the_command_or_nobody_pushes_are_not_pushed(
    project: Project, docker_client: docker.DockerClient, registry_host: str, spec: dict[str, str]
) -> None:
    project.context()
    index = project.load(
        cluster(defaultRegistry={"host": registry_host}),
        cmdimage("app", project.uid, args=["sh", "-c", DOCKER_BUILD], **spec),
    )

    result = run(project.builder(), request(index, "app"))

    tag = content_tag(docker_client, f"{registry_host}/{project.uid}:{BUILD_TAG}")
    assert result.local_ref.familiar() == f"{registry_host}/{project.uid}:{tag}"
    assert content_tag(docker_client, result.local_ref.familiar()) == tag  # retagged locally
    assert registry_tags(registry_host, project.uid) is None
    assert project.uid not in catalog(registry_host)


@pytest.mark.parametrize("mode", ["default", "outputTag", "outputsImageRefTo"])
def test_remote_mode_checks_nothing_in_docker(
    project: Project, registry_host: str, mode: str
) -> None:
    # The engine address is a dead socket: any Docker call would fail this build.
    modes: dict[str, dict[str, Any]] = {
        "default": {},
        "outputTag": {"outputTag": "v1"},
        "outputsImageRefTo": {
            "outputsImageRefTo": "ref.txt",
            "args": ["sh", "-c", f"echo {registry_host}/{project.uid}:scripted > ref.txt"],
        },
    }
    tag_mode = modes[mode]
    registry = {"host": registry_host, "hostFromContainerRuntime": "in.cluster:5000"}
    index = project.load(
        cluster(
            defaultRegistry=registry,
            connection={"docker": {"host": f"unix:///tmp/{project.uid}-no-engine.sock"}},
        ),
        cmdimage("app", project.uid, outputMode="remote", **tag_mode),
    )

    result = run(project.builder(), request(index, "app"))

    expected = {  # Tilt: the expected ref, or the ref the script wrote, as they are
        "default": (
            f"{registry_host}/{project.uid}:{BUILD_TAG}",
            f"in.cluster:5000/{project.uid}:{BUILD_TAG}",
        ),
        "outputTag": (f"{project.uid}:v1", f"{project.uid}:v1"),
        "outputsImageRefTo": (
            f"{registry_host}/{project.uid}:scripted",
            f"in.cluster:5000/{project.uid}:scripted",
        ),
    }[mode]
    assert (result.local_ref.familiar(), result.cluster_ref.familiar()) == expected


# --- the command's environment and arguments ---------------------------------------------


def test_env_without_registry_spec_env_and_image_maps(project: Project) -> None:
    spec_env = [
        "EXPECTED_REF=hijacked",
        "EXPECTED_IMAGE=hijacked",
        "EXPECTED_TAG=hijacked",
        "SPEC_VAR=a=b",
        "SHARED_VAR=from-spec",
    ]
    index = project.load(
        cmdimage(
            "app",
            project.uid,
            args=["sh", "-c", SAVE_ENV],
            env=spec_env,
            imageMaps=["zeta", "alpha"],
            outputMode="remote",
        )
    )
    maps = [
        ("zeta", models.ImageMapStatus(image="kind:5000/zeta:1", image_from_local="lh/zeta:1")),
        ("alpha", models.ImageMapStatus(image="alpha:tilt-2")),
    ]
    builder = project.builder(environ={"SHARED_VAR": "from-daemon", "DAEMON_VAR": "kept"})

    run(builder, request(index, "app", maps))

    env = project.env()
    assert env["EXPECTED_REF"] == f"{project.uid}:{BUILD_TAG}"
    assert env["EXPECTED_IMAGE"] == f"library/{project.uid}"
    assert env["EXPECTED_TAG"] == BUILD_TAG
    assert "EXPECTED_REGISTRY" not in env
    assert "REGISTRY_HOST" not in env
    assert (env["SPEC_VAR"], env["SHARED_VAR"], env["DAEMON_VAR"]) == ("a=b", "from-spec", "kept")
    assert env["DOCKER_HOST"] == project.docker_host  # the daemon's, with no Cluster
    tilt = {k: v for k, v in env.items() if k.startswith("TILT_IMAGE")}
    assert tilt == {
        "TILT_IMAGE_MAP_0": "zeta",
        "TILT_IMAGE_0": "lh/zeta:1",
        "TILT_IMAGE_MAP_1": "alpha",
        "TILT_IMAGE_1": "alpha:tilt-2",
    }


@pytest.mark.parametrize(
    ("ref", "registry", "expected_ref", "expected_image"),
    [
        ("{uid}", {}, "{reg}/{uid}:" + BUILD_TAG, "{uid}"),
        ("gcr.io/{uid}/bar", {}, "{reg}/gcr.io_{uid}_bar:" + BUILD_TAG, "gcr.io_{uid}_bar"),
        (
            "{uid}",
            {"hostFromContainerRuntime": "registry.kind:5000"},
            "{reg}/{uid}:" + BUILD_TAG,
            "{uid}",
        ),
        ("{reg}/{uid}", {}, "{reg}/{uid}:" + BUILD_TAG, "{uid}"),  # already under the registry
    ],
    ids=["plain", "escaped", "host-from-runtime", "already-there"],
)
def test_env_with_registry(
    project: Project,
    registry_host: str,
    ref: str,
    registry: dict[str, str],
    expected_ref: str,
    expected_image: str,
) -> None:
    def fill(text: str) -> str:
        return text.format(uid=project.uid, reg=registry_host)

    index = project.load(
        cluster(defaultRegistry={"host": registry_host, **registry}),
        cmdimage("app", fill(ref), args=["sh", "-c", SAVE_ENV], outputMode="remote"),
    )

    run(project.builder(), request(index, "app"))

    env = project.env()
    assert (env["EXPECTED_REF"], env["EXPECTED_IMAGE"]) == (
        fill(expected_ref),
        fill(expected_image),
    )
    assert env["EXPECTED_TAG"] == BUILD_TAG
    assert (env["EXPECTED_REGISTRY"], env["REGISTRY_HOST"]) == (registry_host, registry_host)


def test_cluster_docker_host_is_used_by_the_command_and_the_daemon(
    project: Project, docker_client: docker.DockerClient
) -> None:
    project.context()
    index = project.load(
        cluster(connection={"docker": {"host": project.docker_host}}),
        cmdimage("app", project.uid, args=BUILD_AND_SAVE_ENV),
    )
    dead = f"unix:///tmp/{project.uid}-daemon-default.sock"
    builder = project.builder(environ={"DOCKER_HOST": dead})

    result = run(builder, request(index, "app"))

    assert project.env()["DOCKER_HOST"] == project.docker_host
    tag = content_tag(docker_client, f"{project.uid}:{BUILD_TAG}")
    assert result.local_ref.familiar() == f"{project.uid}:{tag}"


@pytest.mark.parametrize("folder", ["", "sub/dir"])
def test_args_run_without_a_shell_in_dir(project: Project, folder: str) -> None:
    (project.root / folder).mkdir(parents=True, exist_ok=True)
    words = ["$HOME", "a b", "*", "; exit 1", "`id`"]
    index = project.load(
        cmdimage(
            "app",
            project.uid,
            args=[sys.executable, "-c", SAVE_ARGV, *words],
            dir=folder,
            outputMode="remote",
        )
    )

    run(project.builder(), request(index, "app"))

    seen = json.loads((project.out / "argv.json").read_text())
    assert seen["argv"] == words
    assert Path(seen["cwd"]) == (project.root / folder).resolve()


# --- errors -----------------------------------------------------------------------------


def test_non_zero_exit_names_the_command_and_the_log(project: Project) -> None:
    index = project.load(cmdimage("app", project.uid, args=["sh", "-c", "echo oops; exit 3"]))
    builder = project.builder()

    message = failure(builder, request(index, "app"))

    log = builder.log_dir / "app.log"
    assert message == f'Custom build "echo oops; exit 3" failed: exit status 3; see the log {log}'
    assert log.read_text() == "$ echo oops; exit 3\noops\n"


def test_non_shell_commands_display_as_tilt_shows_them(project: Project) -> None:
    """Tilt's Cmd.String: args joined by spaces, one with a space in it quoted (Go's %q)."""
    args = [sys.executable, "-c", "raise SystemExit(4)"]
    index = project.load(cmdimage("app", project.uid, args=args))
    builder = project.builder()

    message = failure(builder, request(index, "app"))

    display = f'{sys.executable} -c "raise SystemExit(4)"'
    log = builder.log_dir / "app.log"
    assert message == f"Custom build {json.dumps(display)} failed: exit status 4; see the log {log}"


def test_killed_command_reports_the_signal(project: Project) -> None:
    index = project.load(cmdimage("app", project.uid, args=["sh", "-c", "kill -KILL $$"]))
    builder = project.builder()

    message = failure(builder, request(index, "app"))

    log = builder.log_dir / "app.log"
    assert message == f'Custom build "kill -KILL $$" failed: signal: killed; see the log {log}'


def test_missing_program_names_it_and_the_dir(project: Project) -> None:
    program = f"{project.uid}-no-such-program"
    index = project.load(cmdimage("app", project.uid, args=[program, "--flag"]))
    image = index.images["app"]

    message = failure(project.builder(), request(index, "app"))

    assert message == (
        f'Custom build "{program} --flag" failed: the program {program!r} was not found on PATH '
        f"or in {project.root}; fix spec.args of CmdImage app in {image.loc}"
    )


@pytest.mark.parametrize(
    ("mode", "text", "why"),
    [
        (0o644, "#!/bin/sh\ntrue\n", "is not executable, run from"),
        (
            0o755,
            "true\n",
            "could not be started (Exec format error; does it start with #!?), run from",
        ),
    ],
    ids=["no-exec-bit", "no-shebang"],
)
def test_program_that_cannot_run_names_it_and_the_dir(
    project: Project, mode: int, text: str, why: str
) -> None:
    script = project.root / "build.sh"
    script.write_text(text)
    script.chmod(mode)
    index = project.load(cmdimage("app", project.uid, args=["./build.sh"]))
    image = index.images["app"]

    message = failure(project.builder(), request(index, "app"))

    assert message == (
        f"Custom build \"./build.sh\" failed: the program './build.sh' {why} {project.root}; "
        f"fix spec.args of CmdImage app in {image.loc}"
    )


def test_missing_dir_is_named(project: Project) -> None:
    index = project.load(cmdimage("app", project.uid, dir="no/such/dir"))
    image = index.images["app"]

    message = failure(project.builder(), request(index, "app"))

    assert message == (
        f'Custom build "true" cannot run: its dir {project.root / "no/such/dir"} does not exist '
        f"(spec.dir of CmdImage app in {image.loc})"
    )


def test_image_not_tagged_asks_about_expected_ref(project: Project) -> None:
    index = project.load(cmdimage("app", project.uid))

    message = failure(project.builder(), request(index, "app"))

    assert message == (
        "Could not find image in Docker. Did your build command tag the image $EXPECTED_REF? "
        f"(looked for {project.uid}:{BUILD_TAG} in the engine at {project.docker_host})"
    )


def test_image_named_in_the_ref_file_must_exist(project: Project) -> None:
    script = 'echo "$MY_REF" > ref.txt'
    index = project.load(
        cmdimage(
            "app",
            project.uid,
            args=["sh", "-c", script],
            env=[f"MY_REF={project.uid}:never-built"],
            outputsImageRefTo="ref.txt",
        )
    )

    message = failure(project.builder(), request(index, "app"))

    assert message == (
        f"Could not find image in Docker. Your build command wrote {project.uid}:never-built "
        f"to {project.root / 'ref.txt'}; it should also tag that image (looked in the engine "
        f"at {project.docker_host})"
    )


def test_engine_down_names_the_address_and_the_reason(project: Project) -> None:
    address = f"unix:///tmp/{project.uid}-no-engine.sock"
    index = project.load(
        cluster(connection={"docker": {"host": address}}), cmdimage("app", project.uid)
    )
    builder = project.builder()

    # docker-py leaks the socket whose connect() failed; let it go here, not in a later test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        message = failure(builder, request(index, "app"))
        gc.collect()

    assert message.startswith(f"Docker engine at {address} is not reachable: ")
    assert "No such file or directory" in message
    assert message.endswith(ENGINE_HINT)


def test_a_command_that_fails_with_the_engine_down_says_the_engine_is_down(
    project: Project,
) -> None:
    """`docker build` with no engine exits 1 and says why only in its log: the error says it."""
    address = f"unix:///tmp/{project.uid}-no-engine.sock"
    args = ["sh", "-c", "docker build -q . || exit 1"]
    index = project.load(
        cluster(connection={"docker": {"host": address}}), cmdimage("app", project.uid, args=args)
    )
    with warnings.catch_warnings():  # docker-py leaks the socket whose connect() failed
        warnings.simplefilter("ignore", ResourceWarning)
        message = failure(project.builder(), request(index, "app"))
        gc.collect()

    log = project.root.parent / "logs" / "app.log"
    assert message.startswith(
        'Custom build "docker build -q . || exit 1" failed: exit status 1; see the log '
        f"{log}. Docker engine at {address} is not reachable: "
    )
    assert message.endswith(ENGINE_HINT)


def test_a_command_that_fails_with_the_engine_up_gets_no_engine_hint(project: Project) -> None:
    index = project.load(cmdimage("app", project.uid, args=["sh", "-c", "exit 3"]))
    message = failure(project.builder(), request(index, "app"))
    assert message.endswith(
        "failed: exit status 3; see the log " + str(project.root.parent / "logs" / "app.log")
    )


def test_registry_down_reports_the_push_error(
    project: Project, docker_client: docker.DockerClient
) -> None:
    project.context()
    registry = f"127.0.0.1:{unused_port()}"
    index = project.load(
        cluster(defaultRegistry={"host": registry}),
        cmdimage("app", project.uid, args=["sh", "-c", DOCKER_BUILD]),
    )

    message = failure(project.builder(), request(index, "app"))
    gc.collect()  # a push stream left half-read would warn of its open socket now

    tag = content_tag(docker_client, f"{registry}/{project.uid}:{BUILD_TAG}")
    assert message.startswith(f"Pushing {registry}/{project.uid}:{tag} to {registry} failed: ")
    assert f'"http://{registry}/v2/": dial tcp {registry}: connect: connection refused' in message


def test_log_holds_the_output_and_keeps_the_previous_one(project: Project) -> None:
    index = project.load(cmdimage("app", project.uid, args=["cat", "msg.txt"], outputMode="remote"))
    lines: list[tuple[str, str]] = []
    builder = project.builder(output=lambda name, line: lines.append((name, line)))
    log = builder.log_dir / "app.log"

    (project.root / "msg.txt").write_text("first\n")
    run(builder, request(index, "app"))
    (project.root / "msg.txt").write_text("second\nand last, no newline")
    run(builder, request(index, "app"))

    assert log.read_text() == "$ cat msg.txt\nsecond\nand last, no newline\n"
    assert (builder.log_dir / "app.prev.log").read_text() == "$ cat msg.txt\nfirst\n"
    assert lines == [("app", "first"), ("app", "second"), ("app", "and last, no newline")]


def test_a_line_longer_than_the_stream_limit_is_kept(project: Project) -> None:
    script = "head -c 200000 /dev/zero | tr '\\0' x; echo; echo after"
    index = project.load(
        cmdimage("app", project.uid, args=["sh", "-c", script], outputMode="remote")
    )
    builder = project.builder()

    run(builder, request(index, "app"))

    text = (builder.log_dir / "app.log").read_text()
    assert text.startswith(f"$ {script}\nxxx")
    assert text.endswith("\nafter\n")
    assert text.replace("\n", "") == f"$ {script}" + "x" * 200000 + "after"


# --- stopping: timeout and cancellation --------------------------------------------------

GROUP_SCRIPT = "sleep 60 & sleep 60"


def survivors(pgid: int) -> list[psutil.Process]:
    """What is left of a process group that was sent SIGKILL, once the kernel is done with it:
    a killed process closes its pipes (which ends the build) a moment before it is gone."""
    with contextlib.suppress(AssertionError):
        wait_until(lambda: not group_members(pgid), f"process group {pgid} to end", timeout=2)
    return group_members(pgid)


def spawn_recorder(pids: list[int]) -> Callable[[str, int | None], None]:
    def record(name: str, pgid: int | None) -> None:
        if pgid is not None:
            pids.append(pgid)

    return record


async def sleeps_started(pids: list[int]) -> int:
    """The build's process group, once both of GROUP_SCRIPT's sleeps run in it."""

    def both() -> bool:
        return bool(pids) and sum(p.name() == "sleep" for p in group_members(pids[0])) == 2

    await until(both, f"the build's sleeps to start (group {pids})", within=10)
    return pids[0]


def test_build_timeout_kills_the_process_group(project: Project) -> None:
    index = project.load(cmdimage("app", project.uid, args=["sh", "-c", GROUP_SCRIPT]))
    pids: list[int] = []
    builder = project.builder(build_timeout=0.5, on_spawn=spawn_recorder(pids))
    began = time.monotonic()

    message = failure(builder, request(index, "app"))

    assert time.monotonic() - began < 4  # SIGTERM sufficed; no wait for --stop-timeout
    log = builder.log_dir / "app.log"
    assert message == (
        f'Custom build "{GROUP_SCRIPT}" timed out after 0.5 s (--build-timeout); see the log {log}'
    )
    assert len(pids) == 1
    assert survivors(pids[0]) == []


async def cancel_when_running(builder: Builder, req: BuildRequest, pids: list[int]) -> float:
    """Cancel the build once its sleeps run; seconds from cancel() until the task ended."""
    task = asyncio.create_task(builder.build(req))
    await sleeps_started(pids)
    began = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return time.monotonic() - began


def test_cancel_sends_sigterm_to_the_process_group(project: Project) -> None:
    script = f"trap 'echo TERM > \"$OUT/signal\"; exit 143' TERM; {GROUP_SCRIPT}"
    index = project.load(cmdimage("app", project.uid, args=["sh", "-c", script]))
    pids: list[int] = []
    builder = project.builder(on_spawn=spawn_recorder(pids))

    took = run_async(cancel_when_running(builder, request(index, "app"), pids))

    assert took < 4  # well before the 5 s stop timeout: SIGTERM ended it
    assert (project.out / "signal").read_text() == "TERM\n"
    assert survivors(pids[0]) == []


def test_cancel_sends_sigkill_after_the_stop_timeout(project: Project) -> None:
    script = f"trap '' TERM; {GROUP_SCRIPT}"  # the sleeps inherit the ignored SIGTERM
    index = project.load(cmdimage("app", project.uid, args=["sh", "-c", script]))
    pids: list[int] = []
    builder = project.builder(stop_timeout=0.5, on_spawn=spawn_recorder(pids))

    took = run_async(cancel_when_running(builder, request(index, "app"), pids))

    assert 0.5 <= took < 4
    assert survivors(pids[0]) == []
