"""`watch --ui`: the HTTP API and the event stream, against the real daemon on a copy of the
sample (real files, the real engine and registry), read with httpx.

What the browser shows is `test_dashboard_browser.py`'s; the address rules and the event
fan-out's queue are unit-tested at the end.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from cmdimage_watch import cli
from cmdimage_watch.settings import UI_ADDRESS, UiAddress
from cmdimage_watch.web import Events
from tests.daemon_harness import Watchers
from tests.daemon_harness import cli as run_cli
from tests.helpers import cmdimage, free_port, write
from tests.helpers.dashboard import Start, Ui, sample_copy
from tests.helpers.polling import wait_until


@pytest.fixture
def ui(tmp_path: Path, start_ui: Start) -> Ui:
    started = start_ui(sample_copy(tmp_path / "sample"))
    started.watcher.settle()  # the status files are written too
    return started


def test_api_images_is_the_list_status_json_prints(ui: Ui, env: dict[str, str]) -> None:
    shown = run_cli("status", ui.watcher.root, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert ui.images() == json.loads(shown.stdout)
    assert [r["reason"] for r in ui.images()] == ["initial build"] * 3


def test_a_log_is_served_for_a_known_image_only(ui: Ui) -> None:
    log = ui.http.get("/api/images/sample-base/log")
    assert log.status_code == 200
    assert log.headers["content-type"].startswith("text/plain")
    assert "docker build" in log.text and "Successfully built" in log.text
    for name in ("nope", "..%2F..%2F..%2Fetc%2Fpasswd", "sample-base.prev"):
        missing = ui.http.get(f"/api/images/{name}/log")
        assert missing.status_code == 404, name
        assert "root:" not in missing.text
    assert ui.http.get("/etc/passwd").status_code == 404
    assert ui.http.get("/app.js/../../settings.py").status_code == 404


def test_a_long_log_is_served_as_its_last_mebibyte(ui: Ui) -> None:
    log = ui.watcher.root / ".cmdimage-watch" / "logs" / "sample-tool.log"
    log.write_bytes(b"old line\n" * 200_000 + b"the last line\n")  # 1.8 MB
    served = ui.http.get("/api/images/sample-tool/log").text
    first, rest = served.split("\n", 1)
    assert first.startswith("… the first ") and str(log) in first
    assert rest.endswith("old line\nthe last line\n") and rest.startswith("old line\n")
    assert len(rest.encode()) <= 1 << 20


def test_the_page_and_its_assets_come_from_the_daemon(ui: Ui) -> None:
    page = ui.http.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '<script src="/app.js">' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere
    script = ui.http.get("/app.js")
    assert script.status_code == 200 and "EventSource" in script.text
    assert "https://" not in script.text
    graph = ui.http.get("/api/graph.svg")
    assert graph.headers["content-type"].startswith("image/svg+xml")
    assert 'class="node state-ok" data-name="sample-base"' in graph.text
    assert graph.text.count('class="edge"') == 1  # sample-app is built from sample-base


def sse_events(url: str, into: list[dict[str, Any]], stop: threading.Event) -> None:
    """Read `url`'s Server-Sent Events into `into` until `stop` is set (then one more)."""
    with (
        httpx.Client(timeout=httpx.Timeout(10, read=None)) as http,
        http.stream("GET", url) as response,
    ):
        assert response.headers["content-type"] == "text/event-stream"
        for line in response.iter_lines():
            if line.startswith("data: "):
                into.append(json.loads(line.removeprefix("data: ")))
            if stop.is_set():
                return


def test_the_event_stream_carries_the_objects_of_json_output(
    tmp_path: Path, start_ui: Start
) -> None:
    """One trigger, seen twice: on the stream and on the daemon's `--log-format json`
    stdout; the stream's objects are exactly the stdout's, in order."""
    ui = start_ui(sample_copy(tmp_path / "sample"), "--log-format", "json")
    seen: list[dict[str, Any]] = []
    stop = threading.Event()
    reader = threading.Thread(target=sse_events, args=(f"{ui.url}/api/events", seen, stop))
    reader.start()
    try:
        wait_until(lambda: _clients(ui) >= 1, "the stream to connect")
        response = ui.http.post("/api/images/sample-base/trigger")
        assert response.status_code == 202, response.text
        assert response.json() == {"image": "sample-base", "triggered": True}

        def built() -> bool:
            return any(e == {**e, "event": "build_finished", "image": "sample-base"} for e in seen)

        wait_until(built, "the triggered build to finish", timeout=60)
    finally:
        stop.set()
        ui.http.post("/api/images/sample-tool/trigger")  # one more event ends the reader
        reader.join(30)
    started = next(e for e in seen if e["event"] == "build_started")
    assert started["image"] == "sample-base" and started["reason"] == "manual trigger"
    assert any(e["event"] == "output" and e["image"] == "sample-base" for e in seen)
    printed = [
        json.loads(line)
        for line in ui.watcher.output().splitlines()
        if line.startswith('{"event":')
    ]
    first = printed.index(seen[0])
    assert printed[first : first + len(seen)] == seen


def _clients(ui: Ui) -> int:
    """How many streams the daemon serves, as its debug line says (logged at -v)."""
    return ui.watcher.output().count("dashboard: a client connected")


def test_a_trigger_from_another_origin_is_refused(ui: Ui) -> None:
    before = ui.state("sample-base")
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": f"http://localhost:{ui.port + 1}"},
    ):
        refused = ui.http.post("/api/images/sample-base/trigger", headers=headers)
        assert refused.status_code == 403, headers
        assert "cross-origin" in refused.text
    # a page on a name that resolves here (DNS rebinding) reads nothing either
    for host in ("evil.example", "EVIL.example", "localhost.evil.example"):
        rebound = ui.http.get("/api/images", headers={"Host": f"{host}:{ui.port}"})
        assert rebound.status_code == 403, host
    for host in ("LocalHost", "127.0.0.1", "[::1]", "10.1.2.3"):  # IP addresses are safe
        assert ui.http.get("/api/images", headers={"Host": f"{host}:{ui.port}"}).is_success
    assert not (ui.watcher.root / ".cmdimage-watch" / "triggers" / "sample-base").exists()
    ui.watcher.settle()
    assert ui.state("sample-base") == before  # nothing built
    same = ui.http.post(
        "/api/images/sample-base/trigger", headers={"Origin": f"http://127.0.0.1:{ui.port}"}
    )
    assert same.status_code == 202
    assert ui.http.post("/api/images/nope/trigger").status_code == 404
    wait_until(
        lambda: (
            ui.state("sample-base")["startedAt"] != before["startedAt"]
            and ui.state("sample-base")["state"] == "ok"
        ),
        "the same-origin trigger's build",
    )
    assert ui.state("sample-base")["reason"] == "manual trigger"


def test_no_page_may_frame_the_dashboard(ui: Ui) -> None:
    """Framed by another site, a click on a hidden Trigger would be same-origin."""
    for path in ("/", "/api/images", "/api/images/sample-base/log", "/nope"):
        headers = ui.http.get(path).headers
        assert headers["X-Frame-Options"] == "DENY", path
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], path
        assert headers["X-Content-Type-Options"] == "nosniff", path
    with ui.http.stream("GET", "/api/events") as stream:
        assert stream.headers["X-Frame-Options"] == "DENY"


def test_the_log_says_when_it_was_read(ui: Ui) -> None:
    """The page replays the stream's lines of a later time than this over what it got."""
    before = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    read_at = ui.http.get("/api/images/sample-base/log").headers["X-Read-At"]
    after = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert before <= read_at <= after


def test_a_taken_port_is_a_clear_error(tmp_path: Path, env: dict[str, str]) -> None:
    root = sample_copy(tmp_path / "sample")
    port = free_port()
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        done = run_cli("watch", root, "--ui", str(port), "--no-tui", env=env, timeout=30)
    assert done.returncode == 2
    assert f"error: --ui 127.0.0.1:{port}: " in done.stderr
    assert not (root / ".cmdimage-watch").exists()  # refused before taking the tree


def test_a_host_that_is_not_loopback_is_warned_about(watchers: Watchers, tmp_path: Path) -> None:
    root = sample_copy(tmp_path / "sample")
    (root / "base" / "base.yaml").unlink()  # nothing to build: the warning is the point
    (root / "app" / "app.yaml").unlink()
    (root / "tool" / "tool.yaml").unlink()
    port = free_port()
    watcher = watchers.start(root, "--ui", f"0.0.0.0:{port}")
    watcher.wait_log(f"dashboard on http://0.0.0.0:{port}/: bound to 0.0.0.0, anyone")
    url = f"http://127.0.0.1:{port}/api/images"
    for host in ("127.0.0.1", "192.168.1.5", socket.gethostname()):  # this machine's names
        assert httpx.get(url, headers={"Host": f"{host}:{port}"}).status_code == 200, host
    rebound = httpx.get(url, headers={"Host": f"evil.example:{port}"})
    assert rebound.status_code == 403  # bound elsewhere too, a rebinding page gets nothing


def test_a_stuck_browser_is_dropped_and_the_build_goes_on(
    tmp_path: Path, watchers: Watchers
) -> None:
    """A client that reads nothing while a build prints 60,000 lines: once the kernel's
    buffers and its queue of 1,000 events are full it is dropped, and the build ends ok."""
    loud = cmdimage("loud", "loud", args=["sh", "-c", "seq 1 60000"], outputMode="remote")
    write(tmp_path / "tree" / "loud" / "loud.yaml", loud)
    port = free_port()
    watcher = watchers.start(tmp_path / "tree", "--ui", f"127.0.0.1:{port}")
    with socket.socket() as stuck, httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", port))
        stuck.sendall(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        watcher.wait_log("dashboard: a client connected")
        watcher.settle()  # the first build is over
        assert http.post("/api/images/loud/trigger").status_code == 202
        watcher.wait_log("dashboard: a client fell 1000 events behind; dropped it", timeout=60)

        def triggered_ok() -> bool:
            (row,) = http.get("/api/images").json()
            return bool(row["state"] == "ok" and row["reason"] == "manual trigger")

        wait_until(triggered_ok, "the loud build to end ok", timeout=60)


# --- addresses and the fan-out, as units ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port", "loopback"),
    [
        ("10351", "127.0.0.1", 10351, True),
        ("localhost:8080", "localhost", 8080, True),
        ("0.0.0.0:8080", "0.0.0.0", 8080, False),
        ("[::1]:10351", "::1", 10351, True),
        ("192.168.1.5:0", "192.168.1.5", 0, False),
        ("box.lan:9000", "box.lan", 9000, False),
    ],
)
def test_ui_addresses(text: str, host: str, port: int, loopback: bool) -> None:
    address = UiAddress.parse(text)
    assert (address.host, address.port, address.loopback) == (host, port, loopback)


@pytest.mark.parametrize("text", ["", "http://x:1", "70000", "host:", ":80", "a:b:80"])
def test_bad_ui_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"\[HOST:\]PORT"):
        UiAddress.parse(text)


def test_ui_alone_means_the_default_address(tmp_path: Path) -> None:
    folder = tmp_path / "8080"
    folder.mkdir()
    assert cli._ui_alone(["watch", "--ui"]) == ["watch", f"--ui={UI_ADDRESS}"]
    assert cli._ui_alone(["watch", "--ui", "app/"]) == ["watch", f"--ui={UI_ADDRESS}", "app/"]
    assert cli._ui_alone(["watch", "--ui", "-v"]) == ["watch", f"--ui={UI_ADDRESS}", "-v"]
    assert cli._ui_alone(["watch", "--ui", "9000", "."]) == ["watch", "--ui", "9000", "."]
    assert cli._ui_alone(["watch", "--ui", str(folder)])[1] == f"--ui={UI_ADDRESS}"
    assert cli._ui_alone(["watch", "--ui", "8080"]) == ["watch", "--ui", "8080"]  # not ./8080
    assert cli._ui_alone(["watch", "--", "--ui"]) == ["watch", "--", "--ui"]


def test_a_client_that_falls_behind_is_dropped_and_the_others_keep_theirs() -> None:
    async def scenario() -> None:
        events = Events(size=3)
        slow, fast = events.subscribe(), events.subscribe()
        for i in range(3):
            events.publish({"event": "output", "line": str(i)})
            await fast.get()
        assert events.dropped == 0 and slow.qsize() == 3
        events.publish({"event": "output", "line": "3"})  # slow is full: dropped
        assert events.dropped == 1 and events.clients == {fast}
        assert slow.get_nowait() is None  # its handler ends the stream next
        assert json.loads(str(await fast.get())) == {"event": "output", "line": "3"}
        events.close()
        assert fast.get_nowait() is None and not events.clients

    asyncio.run(scenario())
