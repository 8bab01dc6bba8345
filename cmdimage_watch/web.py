"""The dashboard and HTTP API of `watch --ui`: aiohttp, on the daemon's own event loop.

    /                              the page (shipped in `webui/`, nothing fetched elsewhere)
    /api/images                    the rows of `status --json`, from the daemon's memory
    /api/images/NAME/log           NAME's current build log, as text
    /api/graph.svg                 the dependency graph, coloured by state
    /api/events                    Server-Sent Events: the objects of `--log-format json`
    POST /api/images/NAME/trigger  what `cmdimage-watch trigger NAME` does

Safety: loopback unless a host is given; a request's Host must be an IP address, localhost,
the bound host or this machine's name (a DNS-rebinding page, on a name of its own, gets
nothing); a POST from another origin is refused; no page may frame this one (a click on a
hidden Trigger); a URL names an image, never a path. A slow browser never slows a build: each
SSE client has a bounded queue and is dropped when it overflows (its EventSource reconnects).
Wired by `cli watch`; the daemon knows nothing of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web
from loguru import logger

from cmdimage_watch import models, project, triggers, views
from cmdimage_watch.daemon import Daemon
from cmdimage_watch.settings import UiAddress, state_file_name

QUEUE_EVENTS = 1000  # events a client may fall behind by before it is dropped
LOG_TAIL = 1 << 20  # bytes of a log served: a browser would choke on a 500 MB one
KEEPALIVE_S = 15.0  # a comment line this often, so proxies and browsers keep the stream
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
ASSETS = {  # the only files served: a URL never becomes a path
    "/": ("index.html", "text/html"),
    "/app.js": ("app.js", "text/javascript"),
    "/style.css": ("style.css", "text/css"),
}


class Events:
    """Fans each event out to the SSE clients, each with a bounded queue of its own."""

    def __init__(self, size: int = QUEUE_EVENTS) -> None:
        self.size = size
        self.clients: set[asyncio.Queue[str | None]] = set()
        self.dropped = 0  # clients dropped for falling behind

    def publish(self, event: dict[str, Any]) -> None:
        if not self.clients:
            return
        data = json.dumps(event, separators=(",", ":"))  # one line: JSON escapes newlines
        for queue in list(self.clients):
            try:
                queue.put_nowait(data)
            except asyncio.QueueFull:
                self._drop(queue)

    def subscribe(self) -> asyncio.Queue[str | None]:
        queue: asyncio.Queue[str | None] = asyncio.Queue(self.size)
        self.clients.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str | None]) -> None:
        self.clients.discard(queue)

    def close(self) -> None:
        """End every stream (shutdown): their handlers return."""
        for queue in list(self.clients):
            self._end(queue)

    def _drop(self, queue: asyncio.Queue[str | None]) -> None:
        self.dropped += 1
        logger.warning("dashboard: a client fell {} events behind; dropped it", self.size)
        self._end(queue)

    def _end(self, queue: asyncio.Queue[str | None]) -> None:
        self.clients.discard(queue)
        while not queue.empty():  # room for the end mark, which the handler sees next
            queue.get_nowait()
        queue.put_nowait(None)


class Dashboard:
    def __init__(self, daemon: Daemon, address: UiAddress, events: Events) -> None:
        self.daemon, self.address, self.events = daemon, address, events
        self.app = web.Application(middlewares=[self._guard])
        self.app.on_response_prepare.append(_secure)
        names = {"localhost", address.host, socket.gethostname(), socket.getfqdn()}
        self.hosts = {name.lower() for name in names}  # and any IP address
        self.app.router.add_get("/api/images", self.images)
        self.app.router.add_get("/api/images/{name}/log", self.log)
        self.app.router.add_post("/api/images/{name}/trigger", self.trigger)
        self.app.router.add_get("/api/graph.svg", self.graph)
        self.app.router.add_get("/api/events", self.stream)
        for route in ASSETS:
            self.app.router.add_get(route, self.asset)
        self.port = address.port  # the one bound, once started (port 0 picks a free one)

    # --- the API -------------------------------------------------------------------------

    def rows(self) -> list[views.Row]:
        daemon = self.daemon
        kept = project.kept_statuses(daemon.index)
        return views.all_rows(daemon.index, daemon.state, daemon.root, kept)

    async def images(self, request: web.Request) -> web.Response:
        now = datetime.now(UTC)
        return web.json_response([r.to_json(now) for r in self.rows()], dumps=_dumps)

    async def graph(self, request: web.Request) -> web.Response:
        svg = views.svg(self.daemon.index, self.rows())
        return web.Response(text=svg, content_type="image/svg+xml")

    async def log(self, request: web.Request) -> web.Response:
        name = self._known(request)
        path = self.daemon.settings.log_dir / state_file_name(name, ".log")
        read_at = models.format_time(datetime.now(UTC))  # as events' times: they compare
        text = _tail(path, LOG_TAIL)  # on the loop: no output line is written meanwhile
        # the page appends the stream's lines of a later time than this to what it got
        headers = {"X-Read-At": read_at}
        return web.Response(text=text, content_type="text/plain", headers=headers)

    async def trigger(self, request: web.Request) -> web.Response:
        _same_origin(request)
        if not self.daemon.ready.is_set() or self.daemon.stop.is_set():
            raise web.HTTPServiceUnavailable(text="the daemon is starting or stopping\n")
        name = self._known(request)
        path = triggers.request(self.daemon.trigger_dir, name)
        self.daemon.triggers.handle([path])  # now; the watcher's report of it is a no-op
        return web.json_response({"image": name, "triggered": True}, status=202)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        queue = self.events.subscribe()
        logger.debug("dashboard: a client connected ({} now)", len(self.events.clients))
        try:
            await response.write(b"retry: 1000\n\n")
            while True:
                try:
                    first = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                batch = [first] + [queue.get_nowait() for _ in range(queue.qsize())]
                done = None in batch
                text = "".join(f"data: {data}\n\n" for data in batch if data is not None)
                if text:
                    await response.write(text.encode())
                if done:
                    break
        except ConnectionResetError:
            pass  # the browser went
        finally:
            self.events.unsubscribe(queue)
        return response

    async def asset(self, request: web.Request) -> web.Response:
        name, kind = ASSETS[request.path]
        text = resources.files("cmdimage_watch").joinpath("webui", name).read_text("utf-8")
        return web.Response(text=text, content_type=kind, headers={"Cache-Control": "no-cache"})

    def _known(self, request: web.Request) -> str:
        name = request.match_info["name"]
        if name not in project.image_names(self.daemon.index):
            raise web.HTTPNotFound(text=f"no CmdImage named {name}\n")
        return name

    # --- safety ---------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """A request must name this machine: an IP address, or one of `hosts`. A page on a
        name of its own that resolves here (DNS rebinding) gets nothing."""
        host = _host_name(request.host)
        if host not in self.hosts and not _is_ip(host):
            names = ", ".join(sorted(self.hosts))
            refused = f"this dashboard answers to an IP address or {names}, not {host}\n"
            raise web.HTTPForbidden(text=refused)
        response: web.StreamResponse = await handler(request)
        return response

    # --- start and stop -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        """Serve while the block runs; yields the URL. OSError when the port is taken."""
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.address.host, self.address.port, reuse_address=True)
            await site.start()
            self.port = int(runner.addresses[0][1])  # port 0: the one the system picked
            url = self.address.url(self.port)
            if self.address.loopback:
                logger.info("dashboard on {}", url)
            else:
                logger.warning(
                    "dashboard on {}: bound to {}, anyone who can reach this machine sees "
                    "the build logs and can trigger builds",
                    url,
                    self.address.host,
                )
            yield url
        finally:
            self.events.close()
            await runner.cleanup()


def _tail(path: Path, limit: int) -> str:
    """The last `limit` bytes of a log, said to be cut when they are; "" before a build."""
    try:
        with path.open("rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(0, size - limit))
            data = log.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", "replace")
    if size <= limit:
        return text
    return (
        f"… the first {size - len(data):,} bytes are left out; the whole log is {path}\n"
        + (text.split("\n", 1)[-1])
    )


def _same_origin(request: web.Request) -> None:
    """A POST must come from this page (or a tool that sends no Origin, like curl): a page
    elsewhere must not make the daemon run builds."""
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    cross = site not in (None, "same-origin", "none") or (
        origin is not None and origin != f"{request.scheme}://{request.host}"
    )
    if cross:
        raise web.HTTPForbidden(text=f"cross-origin request refused (Origin: {origin})\n")


def _host_name(host: str) -> str:
    """`LocalHost:10351` -> `localhost`, `[::1]:10351` -> `::1`."""
    host = host.lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _secure(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
