"""The dashboard's tests' daemon: `watch --ui` on a copy of the sample, and an httpx client.

The fixture that starts one (`start_ui`) is in `tests/conftest.py`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.daemon_harness import Watcher

SAMPLE = Path(__file__).resolve().parents[2] / "sample-project"
IMAGES = ["sample-app", "sample-base", "sample-tool"]


def sample_copy(into: Path) -> Path:
    """The sample as a new user has it: no state folder, no status files."""
    shutil.copytree(SAMPLE, into, ignore=shutil.ignore_patterns(".cmdimage-watch", "*.status.yaml"))
    return into


class Ui:
    """A daemon with `--ui` on its own port, and an httpx client for it."""

    def __init__(self, watcher: Watcher, port: int) -> None:
        self.watcher, self.port = watcher, port
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def images(self) -> list[dict[str, Any]]:
        response = self.http.get("/api/images")
        response.raise_for_status()
        found: list[dict[str, Any]] = response.json()
        return found

    def state(self, name: str) -> dict[str, Any]:
        return next(r for r in self.images() if r["name"] == name)

    def all_ok(self) -> list[dict[str, Any]] | None:
        found = self.images()
        ok = [r["name"] for r in found if r["state"] == "ok"]
        return found if ok == IMAGES else None


Start = Callable[..., Ui]
