#!/usr/bin/env python3
"""Replay README.md's walk-through, as written, on a copy of this checkout.

Each `$ command` of the walk-through's console blocks runs in the copy (the `watch` one in
the background, as in a first terminal); what it prints must match the lines the README
shows after it, where `…` stands for anything and runs of spaces count as one. Exits 0
when every step matched, 1 with the first difference otherwise.

    scripts/walkthrough.py [--keep]
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SECTION = "## Five-minute walk-through"


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)


def steps(readme: str) -> list[Step]:
    """The `$ ` commands of the section's console blocks, with the output shown for each."""
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    found: list[Step] = []
    for block in re.findall(r"```console\n(.*?)```", section, flags=re.DOTALL):
        for line in block.splitlines():
            if line.startswith("$ "):
                found.append(Step(line[2:]))
            elif found:
                found[-1].expected.append(line)
    return found


def matches(expected: list[str], actual: list[str]) -> bool:
    if len(expected) != len(actual):
        return False
    return all(
        re.fullmatch(_pattern(e), _squeeze(a)) for e, a in zip(expected, actual, strict=True)
    )


def _squeeze(line: str) -> str:
    return " ".join(line.split())


def _pattern(line: str) -> str:
    return ".*".join(re.escape(part) for part in _squeeze(line).split("…"))


def copy_checkout(into: Path) -> Path:
    """The tracked files (as they are in the work tree), with the existing .venv linked in."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    if (REPO / ".venv").is_dir():
        (into / ".venv").symlink_to(REPO / ".venv")
    return into


def run(workdir: Path, steps_: list[Step]) -> int:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    daemon: subprocess.Popen[bytes] | None = None
    try:
        for step in steps_:
            print(f"$ {step.command}", flush=True)
            if " watch " in f" {step.command} ":
                log = (workdir / "daemon.log").open("wb")
                daemon = subprocess.Popen(
                    ["bash", "-c", f"exec {step.command}"],
                    cwd=workdir,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                continue
            done = subprocess.run(
                ["bash", "-c", step.command],
                cwd=workdir,
                env=env,
                timeout=300,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                check=False,
            )
            actual = done.stdout.decode("utf-8", "replace").splitlines()
            if not matches(step.expected, actual):
                print("expected:\n  " + "\n  ".join(step.expected), file=sys.stderr)
                print("got:\n  " + "\n  ".join(actual), file=sys.stderr)
                return 1
        return _stop(daemon, workdir)
    finally:
        if daemon is not None and daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()


def _stop(daemon: subprocess.Popen[bytes] | None, workdir: Path) -> int:
    """Ctrl-C, as in the first terminal: the daemon must exit 0."""
    if daemon is None:
        return 0
    daemon.send_signal(signal.SIGINT)
    code = daemon.wait(timeout=60)
    if code != 0:
        print((workdir / "daemon.log").read_text(), file=sys.stderr)
        print(f"the daemon exited {code} after Ctrl-C", file=sys.stderr)
    return 0 if code == 0 else 1


def main() -> int:
    keep = "--keep" in sys.argv[1:]
    found = steps((REPO / "README.md").read_text(encoding="utf-8"))
    if not found:
        print(f"README.md has no console steps under {SECTION!r}", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="cmdimage-watch-walkthrough."))
    try:
        code = run(copy_checkout(workdir), found)
    finally:
        if keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"walkthrough: {len(found)} steps, {'all matched' if code == 0 else 'FAILED'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
