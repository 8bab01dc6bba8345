"""A harness for running the real `cmdimage-watch watch` as a subprocess against real files.

`Watchers` starts daemons (output to a log file, ready once they log "watching") and always
stops them: SIGTERM, then SIGKILL by pid; `Watcher.settle` waits until a daemon has handled
every change made so far. The tree is `tests.helpers.tree`'s, waiting `tests.helpers.polling`'s.
Status files are read with a plain YAML loader.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from tests.helpers.polling import GUARD_S, wait_until

# --- status files --------------------------------------------------------------------------


def status_path(spec: Path) -> Path:
    return spec.with_name(spec.name.removesuffix(".yaml") + ".status.yaml")


def status_docs(spec: Path) -> list[dict[str, Any]]:
    """The documents of `spec`'s status file; [] while it does not exist."""
    try:
        text = status_path(spec).read_text("utf-8")
    except FileNotFoundError:
        return []
    return [doc for doc in YAML(typ="safe", pure=True).load_all(text) if doc is not None]


def find_doc(spec: Path, kind: str, name: str) -> dict[str, Any]:
    """One document of `spec`'s status file; {} when it is not there."""
    for doc in status_docs(spec):
        if doc.get("kind") == kind and doc.get("metadata", {}).get("name") == name:
            return doc
    return {}


def status_of(spec: Path, kind: str, name: str) -> dict[str, Any]:
    """The `status` of one object of `spec`'s status file; {} when it is not there."""
    value: dict[str, Any] = find_doc(spec, kind, name).get("status") or {}
    return value


def completed(spec: Path, name: str) -> dict[str, Any]:
    """The `completed` state of CmdImage `name`; {} while it has none or is building again."""
    value = status_of(spec, "CmdImage", name)
    done: dict[str, Any] = value.get("completed") or {}
    return done if "building" not in value else {}


# --- processes -----------------------------------------------------------------------------


@dataclass
class Watcher:
    """One `cmdimage-watch watch` process and its combined output."""

    root: Path
    log: Path
    proc: subprocess.Popen[bytes]
    _settles: int = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text("utf-8", "replace")

    def problems(self) -> list[str]:
        """The warnings and errors the daemon logged."""
        return [
            line for line in self.output().splitlines() if " WARNING " in line or " ERROR " in line
        ]

    def wait_log(self, needle: str, timeout: float = GUARD_S) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None and needle not in self.output():
                raise AssertionError(
                    f"the daemon exited ({self.proc.returncode}) before logging {needle!r}:\n"
                    + self.output()
                )
            return needle in self.output()

        wait_until(seen, f"{needle!r} in the daemon's log", timeout)

    def settle(self) -> None:
        """Return once every change made before this call has been seen and the work it
        started is over, as the daemon's `-v` log tells. A sentinel file is written in the
        trigger folder (watched, and ignored there as `trigger`'s temp files are); events
        arrive in order, so every earlier change is in the batch that holds it, or before."""
        self._settles += 1
        sentinel = self.root / ".cmdimage-watch" / "triggers" / f".settle-{self._settles}"
        sentinel.write_text("")

        def idle() -> bool:
            text = self.output()
            listed = rf"^.* batch (\d+): .*{re.escape(str(sentinel))}(?:,| \(|$)"
            found = re.search(listed, text, re.MULTILINE)
            if found is None and self.proc.poll() is not None:
                raise AssertionError(f"the daemon exited before settling:\n{text}")
            return found is not None and f"idle after batch {found[1]}\n" in text

        wait_until(idle, f"the daemon to handle {sentinel.name} and go idle")
        sentinel.unlink()

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = GUARD_S) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the daemon did not exit in {timeout:g} s") from None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def daemon_env(docker_host: str) -> dict[str, str]:
    """This environment for a daemon: the test engine, the legacy builder, no stray Tilt vars."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPECTED_", "TILT_"))}
    env.pop("REGISTRY_HOST", None)
    return env | {"DOCKER_HOST": docker_host, "DOCKER_BUILDKIT": "0", "PYTHONUNBUFFERED": "1"}


def cli(
    *args: str | Path, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `cmdimage-watch ARGS` to completion, capturing its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "cmdimage_watch", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Watchers:
    """Starts daemons for one test; `stop_all` is the fixture's teardown."""

    logs: Path
    env: dict[str, str]
    started: list[Watcher] = field(default_factory=list)

    def start(
        self,
        root: Path,
        *flags: str,
        debounce: float = 0.05,
        stop_timeout: float = 1.0,
        log: Path | None = None,
        prefix: tuple[str, ...] = (),
    ) -> Watcher:
        """`cmdimage-watch watch ROOT` with small timings; returns once it logs "watching".
        Its output goes to `log` (say, inside the tree, as `watch . > daemon.log` does);
        `prefix` runs it through another command that ends by exec'ing it (`unshare ...`)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log = log or self.logs / f"daemon-{len(self.started)}.log"
        args = [*prefix, sys.executable, "-m", "cmdimage_watch", "watch", str(root)]
        args += ["--debounce", str(debounce), "--stop-timeout", str(stop_timeout), "-v", *flags]
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                args, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env
            )
        watcher = Watcher(root, log, proc)
        self.started.append(watcher)
        watcher.wait_log("watching")
        return watcher

    def stop_all(self) -> None:
        for watcher in self.started:
            watcher.stop()
