"""What one build is told, as pure functions of its request (SPEC §3, steps 2 to 4).

The expected ref in each output mode, Tilt's environment for the command, the engine
address the build and the daemon's own Docker client use, whether the result is pushed,
and Tilt's display form of a command. `builder` composes these with `runner` and `engine`;
nothing here runs a process or talks to Docker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from cmdimage_watch import models, refs
from cmdimage_watch.graph import Image


class BuildError(Exception):
    """A failed build; str() is exactly the `completed.error` text."""


class EngineUnreachable(BuildError):
    """The Docker engine at `address` did not answer."""

    def __init__(self, message: str, address: str) -> None:
        super().__init__(message)
        self.address = address


@dataclass(frozen=True)
class BuildRequest:
    image: Image
    cluster: models.Cluster | None
    image_maps: list[tuple[str, models.ImageMapStatus]]  # in `spec.imageMaps` order
    started_at: datetime
    cache_key: str = ""  # 16 hex of the inputs digest, with the registry cache on
    reuse: bool = True  # may be pulled from the cache (a trigger builds, then shares)


@dataclass(frozen=True)
class BuildResult:
    local_ref: refs.Ref
    cluster_ref: refs.Ref
    reused: bool = False  # pulled from the registry cache: no command ran
    image_id: str = ""  # of a build in the engine (the daemon's own, not a remote one)


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


SHOWN_COMMAND_MAX = 300  # characters of a command an error shows; the build log has it all


def shown(display: str) -> str:
    """A command as an error message shows it: a 900 KB one is cut, with its length."""
    if len(display) <= SHOWN_COMMAND_MAX:
        return display
    return f"{display[:SHOWN_COMMAND_MAX]}… ({len(display)} characters)"


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


def spec_env(image: Image) -> dict[str, str]:
    """`spec.env` as a mapping (validated as `K=V` entries by the model)."""
    return dict(entry.split("=", 1) for entry in image.spec.env)


def docker_host(image: Image, cluster: models.Cluster | None, environ: dict[str, str]) -> str:
    """The engine of `image`'s builds: its Cluster's, else `spec.env`'s DOCKER_HOST, else the
    daemon's; "" is the engine's default. The one place this is decided."""
    if cluster and cluster.docker_host:
        return cluster.docker_host
    return spec_env(image).get("DOCKER_HOST") or environ.get("DOCKER_HOST", "")


def build_env(request: BuildRequest, exp: Expected, base: dict[str, str]) -> dict[str, str]:
    """The daemon's environment, then spec.env, then Tilt's variables (later entries win)."""
    env = dict(base)
    env.update(spec_env(request.image))
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


def reusable(request: BuildRequest, registry: refs.Registry | None) -> bool:
    """Whether the registry cache can stand in for this build: an image the daemon pushes
    to its Cluster's registry, which has the engine's image id (one the command pushes
    itself, `outputMode: remote`, never is)."""
    return registry is not None and needs_push(request)


def content_refs(request: BuildRequest, exp: Expected, image_id: str) -> tuple[refs.Ref, refs.Ref]:
    """The image's refs tagged by its content (`tilt-<16 hex of its id>`): local, cluster."""
    tag = refs.build_tag(request.image.ref, exp.registry, refs.content_tag(image_id))
    local = refs.local_name(request.image.ref, exp.registry).with_tag(tag)
    return local, refs.cluster_name(request.image.ref, exp.registry).with_tag(tag)


def needs_push(request: BuildRequest) -> bool:
    spec = request.image.spec
    return spec.cluster_needs in ("", "push") and request.image.output_mode == "local-docker"
