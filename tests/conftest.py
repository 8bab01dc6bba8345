"""Session fixtures for the real Docker engine and registry that `scripts/services.sh` runs.

`scripts/test` starts both and exports DOCKER_HOST and CIW_REGISTRY; these fixtures check that
they answer and hand them to the tests. A missing engine or registry fails the test that needs
it, with the command that fixes it: nothing here skips.
"""

import contextlib
import os
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from tests.daemon_harness import Watchers, daemon_env
from tests.helpers import free_port, specschema
from tests.helpers.dashboard import Start, Ui
from tests.helpers.polling import wait_until

BASE_IMAGE = "cmdimage-watch/busybox:latest"
TTY_VARS = ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
FIX = "run scripts/setup (or use scripts/test)"


def ping_engine(host: str) -> None:
    """Raise OSError unless the engine at `host` (unix:// or tcp://) answers /_ping with 200.

    Not the SDK: its unix transport leaks the socket when connect() fails, and the resulting
    ResourceWarning is an error under this suite's filterwarnings.
    """
    scheme, _, address = host.partition("://")
    if scheme == "tcp":
        with urllib.request.urlopen(f"http://{address}/_ping", timeout=10):
            return
    if scheme != "unix":
        raise OSError(f"unsupported DOCKER_HOST scheme {scheme!r}: use unix:// or tcp://")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(address)
        sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        status_line = sock.recv(1024).split(b"\r\n", 1)[0]
    if status_line.split()[1:2] != [b"200"]:
        raise OSError(f"/_ping answered {status_line!r}")


@pytest.fixture(scope="session")
def docker_host() -> str:
    """The engine's address from DOCKER_HOST, checked with a ping."""
    return _engine_from("DOCKER_HOST")


@pytest.fixture(scope="session")
def second_docker_host() -> str:
    """The second engine (a shared or remote one, on a loopback TCP port) from
    CIW_DOCKER_HOST_2, checked with a ping."""
    return _engine_from("CIW_DOCKER_HOST_2")


def _engine_from(variable: str) -> str:
    host = os.environ.get(variable, "")
    if not host:
        pytest.fail(f"{variable} is not set, so no Docker engine: {FIX}", pytrace=False)
    try:
        ping_engine(host)
    except OSError as exc:
        problem = str(exc)
    else:
        return host
    pytest.fail(f"No Docker engine at {host}: {FIX} ({problem})", pytrace=False)


@pytest.fixture(scope="session")
def docker_client(docker_host: str) -> Iterator[docker.DockerClient]:
    """One SDK client for the whole session, closed at its end."""
    client = docker.DockerClient(base_url=docker_host, timeout=60)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def registry_host() -> str:
    """The registry's host:port from CIW_REGISTRY, checked with a GET of /v2/."""
    host = os.environ.get("CIW_REGISTRY", "")
    if not host:
        pytest.fail(f"CIW_REGISTRY is not set, so no registry: {FIX}", pytrace=False)
    try:
        with urllib.request.urlopen(f"http://{host}/v2/", timeout=10) as response:
            status: int = response.status
    except OSError as exc:
        problem = str(exc)
    else:
        if status == 200:
            return host
        problem = f"status {status}, not 200"
    pytest.fail(f"No registry answers at http://{host}/v2/: {FIX} ({problem})", pytrace=False)


@pytest.fixture(scope="session")
def base_image(docker_client: docker.DockerClient) -> str:
    """A runnable busybox image in the engine (nothing can be pulled from the internet here)."""
    try:
        docker_client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        pass
    else:
        return BASE_IMAGE
    pytest.fail(f"{BASE_IMAGE} is not in the engine: {FIX}", pytrace=False)


def remove_images(client: docker.DockerClient, marker: str) -> None:
    """Remove every tag that contains `marker` (a test's unique id) from the engine."""
    for image in client.images.list():
        for tag in image.tags:
            if marker in tag:
                with contextlib.suppress(docker.errors.NotFound):
                    client.images.remove(tag, force=True)


@pytest.fixture
def env() -> dict[str, str]:
    """A daemon's environment: the test engine's address (not checked: a test that builds
    asks for `docker_client` too, and a test that needs no engine does not wait for one),
    the legacy builder, no stray Tilt variables, and no terminal settings of the shell
    that runs the tests (a test that wants a terminal sets its own)."""
    engine = os.environ.get("DOCKER_HOST", "")
    plain = {k: v for k, v in daemon_env(engine).items() if k not in TTY_VARS}
    return plain | {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


@pytest.fixture
def watchers(tmp_path: Path, env: dict[str, str]) -> Iterator[Watchers]:
    """Starts daemons for one test (`watchers.start(root)`); each is stopped at its end."""
    started = Watchers(tmp_path / "logs", env)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
def start_ui(watchers: Watchers, docker_client: object) -> Iterator[Start]:
    """Starts a daemon with `--ui` (and FLAGS) on a tree; once its images are ok, its Ui."""
    started: list[Ui] = []

    def start(root: Path, *flags: str) -> Ui:
        port = free_port()
        ui = Ui(watchers.start(root, "--ui", f"127.0.0.1:{port}", *flags), port)
        started.append(ui)
        wait_until(ui.all_ok, "the sample's images to be ok", timeout=120)
        return ui

    try:
        yield start
    finally:
        for ui in started:
            ui.http.close()


@pytest.fixture(autouse=True)
def _valid_specs_pass_the_schema(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test with a tmp_path: every spec file left there that the daemon loads
    without an error, the shipped schema accepts too (what the daemon takes, an editor
    must not squiggle)."""
    tmp = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if tmp is not None:
        refused = specschema.refused(tmp)
        assert refused == [], "valid spec files the schema refuses:\n" + "\n".join(refused)
