"""The one test tree: a folder of spec files, and `out` beside it for what commands record.

`out` is outside the tree, so recording a build never feeds the watcher. Daemon tests
record lines (`record`, `lines`); the terminal tests use a single image folder (`img`,
`script`); the `build` command tests run the command line (`cli`) and count the commands
it ran (`add`, `runs`).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from cmdimage_watch.statusfiles import read_status_file
from tests.helpers import cmdimage, write

if TYPE_CHECKING:
    from tests.daemon_harness import Watchers


def q(path: Path | str) -> str:
    return shlex.quote(str(path))


@dataclass
class Tree:
    root: Path
    out: Path
    uid: str  # in image names, so tests never share or remove each other's images
    watchers: Watchers | None = None  # the daemons started on it, for `settle`

    def make(self) -> Tree:
        self.root.mkdir(parents=True, exist_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)
        return self

    def spec(self, rel: str, *docs: str) -> Path:
        return write(self.root / rel, *docs)

    def lines(self, name: str = "builds") -> list[str]:
        """The lines build commands appended to `out/<name>`."""
        try:
            return (self.out / name).read_text().splitlines()
        except FileNotFoundError:
            return []

    def record(self, what: str = "$(cat src.txt)", name: str = "builds") -> str:
        """A shell snippet that appends `what` (evaluated by the build's shell) to out/<name>."""
        return f'echo "{what}" >> {q(self.out / name)}'

    def pids(self, name: str = "pids") -> list[int]:
        return [int(line) for line in self.lines(name)]

    def kill_recorded(self, started: float) -> None:
        """SIGKILL the groups of build processes a test recorded and left running (only
        processes younger than the test, so a reused pid is never hit)."""
        for path in self.out.glob("pids*"):
            for line in path.read_text().split():
                with contextlib.suppress(psutil.Error, OSError, ValueError):
                    if psutil.Process(int(line)).create_time() >= started - 1:
                        os.killpg(int(line), signal.SIGKILL)

    # --- one image folder, `img` (the terminal tests) --------------------------------------

    @property
    def img(self) -> Path:
        return self.root / "img"

    def img_spec(self, name: str, *args: str, **spec: Any) -> Path:
        return write(self.img / "img.yaml", cmdimage(name, self.uid, args=list(args), **spec))

    def script(self, *lines: str) -> None:
        (self.img / "build.sh").write_text("\n".join(lines) + "\n")

    # --- `cmdimage-watch build`, and the commands it ran ------------------------------------

    @property
    def seen(self) -> Path:
        """What a command saved of its environment (app's TILT_IMAGE_0)."""
        return self.out / "seen"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "cmdimage_watch", "build", str(self.root), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)

    def runs(self) -> list[str]:
        """One word per command run, as `add`'s images record them."""
        return self.lines("counter")

    def status(self, name: str) -> list[dict[str, Any]]:
        return read_status_file(self.root / name / f"{name}.status.yaml")

    def add(self, name: str, script: str, **spec: Any) -> None:
        """An image in `name/` whose command gets COUNTER and SEEN (files in `out`)."""
        env = [f"COUNTER={self.out / 'counter'}", f"SEEN={self.seen}", "DOCKER_BUILDKIT=0"]
        doc = cmdimage(name, f"{self.uid}-{name}", args=["sh", "-c", script], env=env, **spec)
        write(self.root / name / f"{name}.yaml", doc)
