"""One build, Tilt's custom_build semantics step by step (SPEC §3).

Fed a `BuildRequest` by `reconcile` (the image, its cluster, its resolved ImageMaps), it
composes the three parts of a build: what the command is told (`buildenv`, pure), the
command as a process with its log (`runner`), and the result checked, content-tagged and
pushed in the Docker engine (`engine`); with the registry cache on, a build may be pulled
instead, and is shared after (`regcache`). Every failure is a `BuildError` whose text is
what lands in `completed.error`.
"""

from __future__ import annotations

import asyncio
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

from cmdimage_watch import models, refs
from cmdimage_watch.buildenv import (
    BuildError,
    BuildRequest,
    BuildResult,
    EngineUnreachable,
    Expected,
    build_env,
    content_refs,
    display_command,
    docker_host,
    expected,
    needs_push,
    quoted,
    reusable,
)
from cmdimage_watch.graph import Image
from cmdimage_watch.regcache import RegistryCache, push_script_ref
from cmdimage_watch.runner import OnSpawn, Output, Runner

if TYPE_CHECKING:
    from cmdimage_watch.engine import Engines

__all__ = ["BuildError", "BuildRequest", "BuildResult", "Builder"]


@dataclass
class Builder:
    """Runs builds; its `engines` hold one Docker client per engine address."""

    log_dir: Path
    output: Output = lambda name, line: None
    stop_timeout: float = 5.0
    build_timeout: float | None = None
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    on_spawn: OnSpawn = lambda name, pgid: None

    @functools.cached_property
    def engines(self) -> Engines:
        """Made when first needed: the Docker SDK takes a tenth of a second to import, and
        a tree of `outputMode: remote` images (or `status`, `wait`) never needs it."""
        from cmdimage_watch.engine import Engines

        return Engines(self.environ)

    async def build(self, request: BuildRequest) -> BuildResult:
        try:
            return await self._build(request)
        except refs.RefError as exc:  # a ref or tag the registry settings make invalid
            raise BuildError(f"CmdImage {request.image.name}: {exc}") from None

    def close(self) -> None:
        """Close the Docker clients (their pooled connections); a later build opens new ones."""
        if "engines" in self.__dict__:
            self.engines.close()

    async def exists(self, image: Image, cluster: models.Cluster | None, ref: str) -> bool:
        """Whether the engine the build of `image` uses still has `ref` (so an up-to-date
        image is kept); EngineUnreachable when that engine does not answer (no one knows)."""
        host = docker_host(image, cluster, self.environ)
        try:
            await asyncio.to_thread(self.engines.image_id, host, refs.parse_ref(ref))
        except EngineUnreachable:
            raise
        except (BuildError, refs.RefError):
            return False
        return True

    async def _build(self, request: BuildRequest) -> BuildResult:
        image, exp = request.image, expected(request)
        host = docker_host(image, request.cluster, self.environ)
        if request.cache_key and request.reuse and reusable(request, exp.registry):
            reused = await asyncio.to_thread(self._reuse, request, exp, host)
            if reused is not None:
                return reused
        if image.outputs_ref_to:
            image.outputs_ref_to.unlink(missing_ok=True)
        await self._run(image, build_env(request, exp, self.environ), host)
        if image.outputs_ref_to:
            return await asyncio.to_thread(self._script_ref, request, exp, host)
        assert exp.ref is not None
        if image.output_mode == "remote":
            if image.spec.output_tag:  # Tilt: the tag the command was given, as it is
                return BuildResult(exp.ref, exp.ref)
            cluster = refs.cluster_name(image.ref, exp.registry).with_tag(exp.ref.tag or "")
            return BuildResult(exp.ref, cluster)
        return await asyncio.to_thread(self._tag_and_push, request, exp, host)

    async def _run(self, image: Image, env: dict[str, str], host: str) -> None:
        runner = Runner(
            self.log_dir, self.output, self.stop_timeout, self.build_timeout, self.on_spawn
        )
        finished = await runner.run(image, env)
        if finished.returncode != 0:
            message = finished.error()
            down = await self._engine_down(image, host)
            if down:
                raise EngineUnreachable(f"{message}. {down}", self.engines.address(host))
            raise BuildError(message)

    async def answers(self, address: str) -> bool:
        """Whether the engine at `address` answers a ping now."""
        return not await asyncio.to_thread(self.engines.unreachable, address)

    async def _engine_down(self, image: Image, host: str) -> str:
        """Why the engine a failed build needed is unreachable, or "": a `docker build`
        with the engine down fails with exit status 1 and says why only in its log."""
        if image.output_mode == "remote":
            return ""  # such a command may use no engine at all
        return await asyncio.to_thread(self.engines.unreachable, host)

    def _script_ref(self, request: BuildRequest, exp: Expected, host: str) -> BuildResult:
        """outputsImageRefTo: the ref the script wrote, checked and pushed, never retagged."""
        image = request.image
        assert image.outputs_ref_to is not None
        local = read_ref_file(image.outputs_ref_to, image.spec.args)
        cluster = refs.in_cluster(local, exp.registry)
        if image.output_mode == "remote":
            return BuildResult(local, cluster)
        image_id = self.engines.image_id(host, local, written_to=image.outputs_ref_to)
        push_script_ref(self.engines, request, exp, host, local)
        return BuildResult(local, cluster, image_id=image_id)

    def _tag_and_push(self, request: BuildRequest, exp: Expected, host: str) -> BuildResult:
        assert exp.ref is not None
        image_id = self.engines.image_id(host, exp.ref)
        local, cluster = content_refs(request, exp, image_id)
        self.engines.tag(host, image_id, local)
        if needs_push(request) and exp.registry is not None:
            self.engines.push(host, local, exp.registry)
        return BuildResult(local, cluster, image_id=image_id)

    async def share(self, request: BuildRequest, result: BuildResult) -> None:
        """Push a finished build under its inputs tag too (`reconcile` calls it once the
        build is recorded and its inputs are checked unchanged); a failure is logged, never
        the build's."""
        exp = expected(request)
        if not (request.cache_key and result.image_id and reusable(request, exp.registry)):
            return
        host = docker_host(request.image, request.cluster, self.environ)
        cache = RegistryCache(self.engines)
        try:
            await asyncio.to_thread(cache.share, request, exp, host, result)
        except (BuildError, refs.RefError) as exc:
            logger.warning("{}: not shared in the registry cache: {}", request.image.name, exc)

    def _reuse(self, request: BuildRequest, exp: Expected, host: str) -> BuildResult | None:
        """The build of these inputs from the registry cache; None, with a log line, to
        build (a miss, or any fault: the cache alone never fails a build)."""
        try:
            return RegistryCache(self.engines).reuse(request, exp, host)
        except (BuildError, refs.RefError, OSError) as exc:
            logger.warning(
                "{}: the registry cache could not be used ({}); building", request.image.name, exc
            )
            return None


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
