"""Settings: every knob of the daemon, frozen, with its unit and the reason for its default.

`cli` builds one from flags; `daemon`, `scheduler` and `builder` read it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    root: Path = Field(Path(), description="The watched tree.")
    debounce: float = Field(
        0.05,
        gt=0,
        description="Seconds of quiet before a batch of changes is handled; "
        "short, since content digests (not the timer) keep no-op saves from building.",
    )
    debounce_max: float = Field(
        2.0,
        gt=0,
        description="Seconds after which a batch is handled even if writes go on, "
        "so a writer that never stops cannot starve builds.",
    )
    max_parallel: int = Field(3, ge=1, description="Builds at once; 3 is Tilt's default.")
    on_change: Literal["restart", "queue"] = Field(
        "restart",
        description="What a change during a build does: cancel and restart it, "
        "or (Tilt's way) let it finish and build again.",
    )
    stop_timeout: float = Field(
        5.0, ge=0, description="Seconds between SIGTERM and SIGKILL when a build is stopped."
    )
    build_timeout: float | None = Field(
        None, gt=0, description="Seconds a build may run; none by default, as in Tilt."
    )
    storm_threshold: int = Field(
        25, ge=1, description="A batch rebuilding more images than this is logged as a storm."
    )
    poll: bool = Field(False, description="Poll the filesystem instead of using inotify.")
    registry_cache: bool = Field(
        False,
        description="Share builds through the registry by their inputs digest: push each "
        "pushed build tagged in-<digest>, and pull that instead of building when it is there.",
    )

    @property
    def state_dir(self) -> Path:
        return self.root / ".cmdimage-watch"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"


UI_ADDRESS = "127.0.0.1:10351"  # `--ui` alone: one above Tilt's 10350, so both can run
_ADDRESS = re.compile(r"(?:(?P<host>\[[0-9a-fA-F:.]+\]|[^:\[\]]+):)?(?P<port>\d{1,5})")


NAME_MAX = 255  # bytes in one file name on Linux's filesystems


def state_file_name(name: str, suffix: str = "") -> str:
    """`name` + `suffix` as one file name of the state folder that always fits: one too
    long (a 253-character unicode name is 1,012 bytes) keeps its start, then a hash of the
    whole name, so two names never share a file."""
    if len((name + suffix).encode()) <= NAME_MAX:
        return name + suffix
    digest = hashlib.blake2b(name.encode(), digest_size=8).hexdigest()
    room = NAME_MAX - len(suffix.encode()) - len(digest) - 1
    head = name.encode()[:room].decode("utf-8", "ignore")
    return f"{head}-{digest}{suffix}"


@dataclass(frozen=True)
class UiAddress:
    """Where `watch --ui` serves the dashboard."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> UiAddress:
        """`[HOST:]PORT`: `10351`, `0.0.0.0:8080`, `[::1]:10351`; HOST defaults to loopback."""
        match = _ADDRESS.fullmatch(text.strip())
        if match is None or int(match["port"]) > 65535:
            raise ValueError(f"{text!r} is not [HOST:]PORT (a port is 0 to 65535)")
        host = (match["host"] or "127.0.0.1").strip("[]").lower()
        return cls(host, int(match["port"]))

    @staticmethod
    def looks_like(text: str) -> bool:
        """Whether `text` is an address (`8080`, `host:8080`): after `--ui`, it is taken as
        one even where a folder has that name (write `./8080` for the folder)."""
        return _ADDRESS.fullmatch(text) is not None

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def url(self, port: int | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port if port is not None else self.port}/"
