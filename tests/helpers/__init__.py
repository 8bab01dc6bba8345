"""Small builders of spec files for tests: YAML text for each object kind."""

from __future__ import annotations

import asyncio
import functools
import json
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import looptime
from jsonschema import Draft202012Validator

from cmdimage_watch.graph import Index, build_index
from cmdimage_watch.specfiles import load_spec_file

SCHEMAS = Path(__file__).parent.parent / "schemas"
T = TypeVar("T")
P = ParamSpec("P")


def cmdimage(name: str, ref: str | None = None, **spec: Any) -> str:
    body: dict[str, Any] = {"ref": ref or name, "args": ["true"], **spec}
    return _doc("CmdImage", name, spec=body)


def imagemap(name: str, selector: str | None = None, status: dict[str, Any] | None = None) -> str:
    extra: dict[str, Any] = {"spec": {"selector": selector or name}}
    if status is not None:
        extra["status"] = status
    return _doc("ImageMap", name, **extra)


def cluster(name: str = "default", **spec: Any) -> str:
    return _doc("Cluster", name, spec=spec)


def filewatch(name: str, **spec: Any) -> str:
    return _doc("FileWatch", name, spec=spec)


def _doc(kind: str, name: str, **fields: Any) -> str:
    # JSON is YAML, and keeps these helpers free of quoting rules
    return json.dumps(
        {"apiVersion": "tilt.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, **fields}
    )


def write(path: Path, *docs: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n---\n".join(docs) + "\n")
    return path


def index_of(*paths: Path) -> Index:
    return build_index(load_spec_file(p) for p in paths)


def schema(name: str) -> Draft202012Validator:
    """A validator for tests/schemas/NAME.schema.json (JSON Schema 2020-12), itself checked."""
    found = json.loads((SCHEMAS / f"{name}.schema.json").read_text("utf-8"))
    Draft202012Validator.check_schema(found)
    return Draft202012Validator(found, format_checker=Draft202012Validator.FORMAT_CHECKER)


def run_async(coro: Coroutine[Any, Any, T], *, virtual: bool = False) -> T:
    """Run `coro` on a new loop, closed afterwards; with `virtual`, on looptime's loop, whose
    clock jumps ahead whenever every task sleeps (so a 100 s build takes no time)."""
    loop = looptime.new_event_loop() if virtual else asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def on_virtual_time(test: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """An async test run to completion on virtual time (see `run_async`)."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        run_async(test(*args, **kwargs), virtual=True)

    return run


def free_port() -> int:
    """A loopback TCP port nothing listens on now (for an engine or registry that is down,
    or one a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
