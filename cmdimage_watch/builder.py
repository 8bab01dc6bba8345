"""One build, Tilt's custom_build semantics step by step (SPEC §3).

Fed a `BuildRequest` (the image, its cluster, its resolved ImageMaps), it runs the command in
its own process group with Tilt's environment, checks and content-tags the result in the
Docker engine, pushes it, and returns the refs to publish. Every failure is a `BuildError`
whose text is what lands in `completed.error`. The only module that imports `docker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
import requests

from cmdimage_watch import models, refs
from cmdimage_watch.graph import Image

Output = Callable[[str, str], None]  # (image name, line of build output)


class BuildError(Exception):
    """A failed build; str() is exactly the `completed.error` text."""


@dataclass(frozen=True)
class BuildRequest:
    image: Image
    cluster: models.Cluster | None
    image_maps: list[tuple[str, models.ImageMapStatus]]  # in `spec.imageMaps` order
    started_at: datetime


@dataclass(frozen=True)
class BuildResult:
    local_ref: refs.Ref
    cluster_ref: refs.Ref


@dataclass(frozen=True)
class Expected:
    """What the command is told to produce: a ref in two of the modes, a file in the third."""

    ref: refs.Ref | None
    registry: refs.Registry | None


def display_command(args: list[str]) -> str:
    """Tilt's display form (model.Cmd.String): `sh -c X` shows as X when X is one line;
    otherwise the args joined by spaces, an arg with a space in it quoted."""
    if len(args) == 3 and args[:2] == ["sh", "-c"] and "\n" not in args[2]:
        return args[2]
    return " ".join(quoted(a) if " " in a else a for a in args)


def quoted(text: str) -> str:
    """Go's %q, near enough: double quotes, backslash escapes, non-ASCII kept as it is."""
    return json.dumps(text, ensure_ascii=False)


def expected(request: BuildRequest) -> Expected:
    image = request.image
    registry = request.cluster.registry if request.cluster else None
    if image.outputs_ref_to:
        return Expected(None, registry)
    if image.spec.output_tag:
        return Expected(image.ref.with_tag(image.spec.output_tag), registry)
    tag = refs.build_tag(
        image.ref, registry, refs.build_time_tag(int(request.started_at.timestamp()))
    )
    return Expected(refs.local_name(image.ref, registry).with_tag(tag), registry)


def build_env(request: BuildRequest, exp: Expected, base: dict[str, str]) -> dict[str, str]:
    """The daemon's environment, then spec.env, then Tilt's variables (later entries win)."""
    env = dict(base)
    env.update(entry.split("=", 1) for entry in request.image.spec.env)  # type: ignore[misc]
    if exp.ref is not None:
        env["EXPECTED_REF"] = exp.ref.familiar()
        env["EXPECTED_IMAGE"] = refs.expected_image_path(exp.ref)
        env["EXPECTED_TAG"] = exp.ref.tag or ""
    if exp.registry is not None:
        env["EXPECTED_REGISTRY"] = exp.registry.host
        env["REGISTRY_HOST"] = exp.registry.host
    if request.cluster and request.cluster.docker_host:
        env["DOCKER_HOST"] = request.cluster.docker_host
    for i, (name, status) in enumerate(request.image_maps):
        env[f"TILT_IMAGE_MAP_{i}"] = name
        env[f"TILT_IMAGE_{i}"] = status.image_from_local or status.image
    return env


@dataclass
class Builder:
    """Runs builds; holds one Docker client per engine address."""

    log_dir: Path
    output: Output = lambda name, line: None
    stop_timeout: float = 5.0
    build_timeout: float | None = None
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    _clients: dict[str, Any] = field(default_factory=dict)
    on_spawn: Callable[[str, int | None], None] = lambda name, pgid: None

    async def build(self, request: BuildRequest) -> BuildResult:
        try:
            return await self._build(request)
        except refs.RefError as exc:  # a ref or tag the registry settings make invalid
            raise BuildError(f"CmdImage {request.image.name}: {exc}") from None

    async def _build(self, request: BuildRequest) -> BuildResult:
        image = request.image
        exp = expected(request)
        if image.outputs_ref_to:
            image.outputs_ref_to.unlink(missing_ok=True)
        env = build_env(request, exp, self.environ)
        await self._run(image, env)
        docker_host = env.get("DOCKER_HOST", "")
        if image.outputs_ref_to:
            return await asyncio.to_thread(self._script_ref, request, exp, docker_host)
        assert exp.ref is not None
        if image.output_mode == "remote":
            if image.spec.output_tag:  # Tilt: the tag the command was given, as it is
                return BuildResult(exp.ref, exp.ref)
            cluster = refs.cluster_name(image.ref, exp.registry).with_tag(exp.ref.tag or "")
            return BuildResult(exp.ref, cluster)
        return await asyncio.to_thread(self._tag_and_push, request, exp, docker_host)

    def _script_ref(self, request: BuildRequest, exp: Expected, host: str) -> BuildResult:
        """outputsImageRefTo: the ref the script wrote, checked and pushed, never retagged."""
        image = request.image
        assert image.outputs_ref_to is not None
        local = read_ref_file(image.outputs_ref_to, image.spec.args)
        cluster = refs.in_cluster(local, exp.registry)
        if image.output_mode == "remote":
            return BuildResult(local, cluster)
        self._image_id(host, local, written_to=image.outputs_ref_to)
        registry = exp.registry
        if needs_push(request) and registry is not None and refs.under_registry(local, registry):
            self._push(host, local, registry)  # never to a registry the Cluster did not name
        return BuildResult(local, cluster)

    def close(self) -> None:
        """Close the Docker clients (their pooled connections); a later build opens new ones."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    async def exists(self, image: Image, cluster: models.Cluster | None, ref: str) -> bool:
        """Whether the engine the build of `image` uses still has `ref` (so an up-to-date
        image is kept)."""
        env = dict(entry.split("=", 1) for entry in image.spec.env)
        host = cluster.docker_host if cluster and cluster.docker_host else ""
        host = host or env.get("DOCKER_HOST") or self.environ.get("DOCKER_HOST", "")
        try:
            await asyncio.to_thread(self._image_id, host, refs.parse_ref(ref))
        except (BuildError, refs.RefError):
            return False
        return True

    # --- the command -------------------------------------------------------------------

    async def _run(self, image: Image, env: dict[str, str]) -> None:
        log_path = self._rotate_log(image.name)
        display = display_command(image.spec.args)
        with log_path.open("w", encoding="utf-8") as log:
            proc = await self._spawn(image, env, display, log)
            self.on_spawn(image.name, proc.pid)
            try:
                rc = await asyncio.wait_for(self._pump(image.name, proc, log), self.build_timeout)
            except TimeoutError:
                await self._stop(proc)
                raise BuildError(
                    f"Custom build {quoted(display)} timed out after {self.build_timeout:g} s "
                    f"(--build-timeout); see the log {log_path}"
                ) from None
            except BaseException:  # cancelled, or the log's disk is full: end the build too
                await self._stop(proc)
                raise
            finally:
                self.on_spawn(image.name, None)
        if rc != 0:
            message = (
                f"Custom build {quoted(display)} failed: {_exit_text(rc)}; see the log {log_path}"
            )
            down = await self._engine_down(image, env.get("DOCKER_HOST", ""))
            raise BuildError(f"{message}. {down}" if down else message)

    async def _engine_down(self, image: Image, host: str) -> str:
        """Why the engine a failed build needed is unreachable, or "": a `docker build`
        with the engine down fails with exit status 1 and says why only in its log."""
        if image.output_mode == "remote":
            return ""  # such a command may use no engine at all

        def ping() -> str:
            try:
                client = (
                    docker.DockerClient(base_url=host, timeout=5)
                    if host
                    else docker.from_env(timeout=5)
                )
                with contextlib.closing(client):
                    client.ping()
            except (docker.errors.DockerException, requests.RequestException) as exc:
                return str(engine_error(host, exc))
            return ""

        return await asyncio.to_thread(ping)

    async def _spawn(
        self, image: Image, env: dict[str, str], display: str, log: IO[str]
    ) -> asyncio.subprocess.Process:
        if not image.dir.is_dir():
            raise BuildError(
                f"Custom build {quoted(display)} cannot run: its dir {image.dir} does not "
                f"exist (spec.dir of CmdImage {image.name} in {image.loc})"
            )
        log.write(f"$ {display}\n")
        try:
            return await asyncio.create_subprocess_exec(
                *image.spec.args,
                cwd=image.dir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except FileNotFoundError:
            why = "was not found on PATH or in"
        except PermissionError:
            why = "is not executable, run from"
        except OSError as exc:  # ENOEXEC: a script without a #! line, or a foreign binary
            why = f"could not be started ({exc.strerror}; does it start with #!?), run from"
        raise BuildError(
            f"Custom build {quoted(display)} failed: the program {image.spec.args[0]!r} {why} "
            f"{image.dir}; fix spec.args of CmdImage {image.name} in {image.loc}"
        )

    async def _pump(self, name: str, proc: asyncio.subprocess.Process, log: IO[str]) -> int:
        assert proc.stdout is not None
        while raw := await read_line(proc.stdout):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            log.write(line + "\n")
            log.flush()
            self.output(name, line)
        return await proc.wait()

    async def _stop(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM to the build's process group, SIGKILL after `stop_timeout`."""
        kill_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proc.wait()), self.stop_timeout)
        kill_group(proc.pid, signal.SIGKILL)  # children left in the group go too
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 5)

    def _rotate_log(self, name: str) -> Path:
        path = self.log_dir / f"{name}.log"
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            if path.exists():
                path.replace(self.log_dir / f"{name}.prev.log")
            path.touch()
        except OSError as exc:
            raise BuildError(
                f"cannot write the build log {path}: {exc.strerror or exc}; free some disk space "
                f"or make {self.log_dir} a writable folder, then save again"
            ) from None
        return path

    # --- the Docker engine -------------------------------------------------------------

    def _client(self, host: str) -> Any:
        client = self._clients.get(host)
        if client is None:
            try:
                client = docker.DockerClient(base_url=host) if host else docker.from_env()
            except docker.errors.DockerException as exc:
                raise engine_error(host, exc) from None
            self._clients[host] = client
        return client

    def _image_id(self, host: str, ref: refs.Ref, written_to: Path | None = None) -> str:
        try:
            return str(self._client(host).images.get(str(ref)).id)
        except docker.errors.ImageNotFound:
            what = f"wrote {ref.familiar()} to {written_to}" if written_to else None
            raise BuildError(
                f"Could not find image in Docker. Your build command {what}; it should also "
                f"tag that image (looked in the engine at {host or 'the default DOCKER_HOST'})"
                if what
                else "Could not find image in Docker. Did your build command tag the image "
                f"$EXPECTED_REF? (looked for {ref.familiar()} in the engine at "
                f"{host or 'the default DOCKER_HOST'})"
            ) from None
        except (docker.errors.DockerException, requests.RequestException) as exc:
            self._clients.pop(host, None)  # a client whose engine went away: start afresh
            raise engine_error(host, exc) from None

    def _tag_and_push(self, request: BuildRequest, exp: Expected, host: str) -> BuildResult:
        assert exp.ref is not None
        image_id = self._image_id(host, exp.ref)
        tag = refs.build_tag(request.image.ref, exp.registry, refs.content_tag(image_id))
        local = refs.local_name(request.image.ref, exp.registry).with_tag(tag)
        cluster = refs.cluster_name(request.image.ref, exp.registry).with_tag(tag)
        try:
            self._client(host).images.get(image_id).tag(local.name, tag)
        except (docker.errors.DockerException, requests.RequestException) as exc:
            self._clients.pop(host, None)
            raise engine_error(host, exc) from None
        if needs_push(request) and exp.registry is not None:
            self._push(host, local, exp.registry)
        return BuildResult(local, cluster)

    def _push(self, host: str, ref: refs.Ref, registry: refs.Registry) -> None:
        error = ""
        try:
            events = self._client(host).images.push(ref.name, ref.tag, stream=True, decode=True)
            # The SDK reports push failures only inside the stream; read it to its end, since
            # a stream left half-read keeps its connection (and socket) open.
            for event in events:
                detail = event.get("errorDetail") or {}
                error = error or event.get("error") or detail.get("message") or ""
        except (docker.errors.DockerException, requests.RequestException) as exc:
            error = str(exc)
        if error:
            raise BuildError(f"Pushing {ref.familiar()} to {registry.host} failed: {error}")


def needs_push(request: BuildRequest) -> bool:
    spec = request.image.spec
    return spec.cluster_needs in ("", "push") and request.image.output_mode == "local-docker"


def read_ref_file(path: Path, args: list[str]) -> refs.Ref:
    cmd = display_command(args)
    try:
        text = path.read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise BuildError(
            f"Custom build {quoted(cmd)} succeeded, but it should have written the image "
            f"ref it built to {path} (outputsImageRefTo), and that file cannot be read: {exc}"
        ) from None
    try:
        return refs.parse_tagged_ref(text)
    except refs.RefError as exc:
        raise BuildError(
            f"Custom build {quoted(cmd)} wrote {text!r} to {path} (outputsImageRefTo); it "
            f"should write one image ref with a tag, like registry.example.com/app:v1 ({exc})"
        ) from None


def engine_error(host: str, exc: Exception) -> BuildError:
    where = host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    return BuildError(
        f"Docker engine at {where} is not reachable: {exc}. Start it, or point DOCKER_HOST "
        "(or the Cluster's spec.connection.docker.host) at a running engine"
    )


async def read_line(stream: asyncio.StreamReader) -> bytes:
    """The next line, b"" at the end; a line longer than the stream's buffer limit comes in
    pieces (iterating the stream raises ValueError on it, and the build would escape)."""
    try:
        return await stream.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial  # the last line had no newline
    except asyncio.LimitOverrunError as exc:
        return await stream.readexactly(exc.consumed)


def kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _exit_text(rc: int) -> str:
    if rc < 0:  # Go's (and so Tilt's) wording: "signal: killed", "signal: terminated"
        return f"signal: {(signal.strsignal(-rc) or f'signal {-rc}').lower()}"
    return f"exit status {rc}"
