"""The Docker engine, as the daemon itself talks to it (SPEC §3 steps 9 and 10, §4 start-up).

One SDK client per engine address, kept and reused (dropped when its engine goes away);
an image's id, a tag, a push read to the end of its stream, a ping; for the registry cache
a look-up, a pull and the notes beside images. Every failure is a `BuildError` naming the
engine's address. The only module that imports `docker`; used by `builder` and `regcache`,
which resolve each build's address once (`buildenv.docker_host`).
"""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
import urllib3.exceptions

from cmdimage_watch import refs
from cmdimage_watch.buildenv import BuildError, EngineUnreachable

DEFAULT_HOST = "unix:///var/run/docker.sock"
TIMEOUT_S = 60.0  # the longest wait for any answer of an engine (the Docker SDK's default)
TIMEOUT_VAR = "CMDIMAGE_WATCH_ENGINE_TIMEOUT"  # seconds, to change it
TIMEOUTS = (requests.Timeout, urllib3.exceptions.TimeoutError)  # a stream's read raises the 2nd
FAULTS = (docker.errors.DockerException, requests.RequestException, urllib3.exceptions.HTTPError)


def _empty_tar() -> bytes:
    buffer = io.BytesIO()
    tarfile.open(fileobj=buffer, mode="w").close()
    return buffer.getvalue()


EMPTY_TAR = _empty_tar()  # the one layer of a note (`Engines.note`)


@dataclass
class Engines:
    """The Docker clients of a builder, one per engine address; `environ` is the builder's
    environment (so "" means its DOCKER_HOST, or Docker's default)."""

    environ: dict[str, str]
    _clients: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        """Close the clients (their pooled connections); a later call opens new ones."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def image_id(self, host: str, ref: refs.Ref, written_to: Path | None = None) -> str:
        """The id of `ref` in the engine at `host`; BuildError when it is not there."""
        try:
            return str(self._client(host).images.get(str(ref)).id)
        except docker.errors.ImageNotFound:
            raise BuildError(_not_found(host, ref, written_to)) from None
        except FAULTS as exc:
            self._clients.pop(host, None)  # a client whose engine went away: start afresh
            raise self.error(host, exc) from None

    def tag(self, host: str, image_id: str, ref: refs.Ref) -> None:
        try:
            self._client(host).images.get(image_id).tag(ref.name, ref.tag)
        except FAULTS as exc:
            self._clients.pop(host, None)
            raise self.error(host, exc) from None

    def push(self, host: str, ref: refs.Ref, registry: refs.Registry) -> None:
        error = ""
        try:
            events = self._client(host).images.push(ref.name, ref.tag, stream=True, decode=True)
            # The SDK reports push failures only inside the stream; read it to its end, since
            # a stream left half-read keeps its connection (and socket) open.
            for event in events:
                detail = event.get("errorDetail") or {}
                error = error or event.get("error") or detail.get("message") or ""
        except TIMEOUTS:
            self._clients.pop(host, None)
            error = (
                f"no answer from the engine at {self.address(host)} within {self.timeout:g} s;"
                f" is the registry at {registry.host} answering? (set {TIMEOUT_VAR} to wait longer)"
            )
        except FAULTS as exc:
            error = str(exc)
        if error:
            raise BuildError(f"Pushing {ref.familiar()} to {registry.host} failed: {error}")

    def in_registry(self, host: str, ref: refs.Ref) -> str:
        """Whether the registry holds `ref` for this engine's platform: "yes", or why not
        (a manifest look-up through the engine, which has the credentials); BuildError
        when the answer is neither."""
        try:
            client = self._client(host)
            found = client.images.get_registry_data(str(ref))
            version = client.version()
            platform = f"{version.get('Os', 'linux')}/{version.get('Arch', 'amd64')}"
        except docker.errors.NotFound:
            return "is not in the registry cache"
        except FAULTS as exc:
            raise BuildError(f"could not look up {ref.familiar()}: {exc}") from None
        if not found.has_platform(platform):
            return f"is in the registry cache, but not for {platform}"
        return "yes"

    def pull(self, host: str, ref: refs.Ref) -> str:
        """Pull `ref` into the engine at `host`; its image id."""
        try:
            return str(self._client(host).images.pull(ref.name, tag=ref.tag).id)
        except FAULTS as exc:
            raise BuildError(f"pulling {ref.familiar()} failed: {exc}") from None

    def note(self, host: str, ref: refs.Ref, labels: dict[str, str]) -> None:
        """Tag `ref` on an image of one empty layer that carries only `labels`: how the
        registry cache keeps a few words beside an image (the ref a script chose)."""
        changes = [f"LABEL {key}={json.dumps(value)}" for key, value in labels.items()]
        try:
            api = self._client(host).api
            api.import_image_from_data(EMPTY_TAR, repository=ref.name, tag=ref.tag, changes=changes)
        except FAULTS as exc:
            raise BuildError(f"making {ref.familiar()} failed: {exc}") from None

    def read_note(self, host: str, ref: refs.Ref) -> dict[str, str]:
        """The labels of the note `ref` in the registry, pulled and untagged again; {} when
        the registry does not have it."""
        try:
            client = self._client(host)
            labels = dict(client.images.pull(ref.name, tag=ref.tag).labels or {})
        except docker.errors.NotFound:
            return {}
        except FAULTS as exc:
            raise BuildError(f"pulling {ref.familiar()} failed: {exc}") from None
        with contextlib.suppress(*FAULTS):  # a note left in the engine harms no build
            client.images.remove(str(ref))
        return labels

    def untag(self, host: str, ref: refs.Ref) -> None:
        """Take the tag `ref` off its image (an image with no other tag goes with it)."""
        try:
            self._client(host).images.remove(str(ref))
        except FAULTS as exc:
            raise BuildError(f"untagging {ref.familiar()} failed: {exc}") from None

    def unreachable(self, host: str) -> str:
        """Why the engine at `host` does not answer a ping, or "" when it does. A client of
        its own with a short timeout: the pooled one may wait much longer."""
        try:
            with contextlib.closing(self._connect(host, timeout=5)) as client:
                client.ping()
        except FAULTS as exc:
            return str(self.error(host, exc))
        return ""

    def address(self, host: str) -> str:
        """The engine `host` means ("": the environment's DOCKER_HOST, or Docker's default)."""
        return host or self.environ.get("DOCKER_HOST") or DEFAULT_HOST

    def error(self, host: str, exc: Exception) -> EngineUnreachable:
        where = self.address(host)
        return EngineUnreachable(
            f"Docker engine at {where} is not reachable: {exc}. Start it, or point DOCKER_HOST "
            "(or the Cluster's spec.connection.docker.host) at a running engine",
            where,
        )

    def _client(self, host: str) -> Any:
        client = self._clients.get(host)
        if client is None:
            try:
                client = self._connect(host)
            except docker.errors.DockerException as exc:
                raise self.error(host, exc) from None
            self._clients[host] = client
        return client

    @property
    def timeout(self) -> float:
        try:
            return float(self.environ.get(TIMEOUT_VAR) or TIMEOUT_S)
        except ValueError:
            return TIMEOUT_S

    def _connect(self, host: str, **options: Any) -> Any:
        options.setdefault("timeout", self.timeout)
        if host:
            return docker.DockerClient(base_url=host, **options)
        return docker.from_env(environment=self.environ, **options)


def _not_found(host: str, ref: refs.Ref, written_to: Path | None) -> str:
    where = host or "the default DOCKER_HOST"
    if written_to:
        return (
            f"Could not find image in Docker. Your build command wrote {ref.familiar()} to "
            f"{written_to}; it should also tag that image (looked in the engine at {where})"
        )
    return (
        "Could not find image in Docker. Did your build command tag the image $EXPECTED_REF? "
        f"(looked for {ref.familiar()} in the engine at {where})"
    )
