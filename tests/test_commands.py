"""Commands at their edges, run for real by `cmdimage-watch build`: an argument list too
long for execve, and a command that exits leaving a child that holds its output pipe.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cmdimage_watch.statusfiles import read_status_file
from tests.helpers import cmdimage, write
from tests.helpers.polling import wait_until
from tests.helpers.processes import running


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cmdimage_watch", *args]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=60)


def test_an_argument_list_too_long_for_execve_gives_a_bounded_error(tmp_path: Path) -> None:
    huge = "x" * 300_000  # over Linux's 128 KiB for one argument: execve says E2BIG
    spec = write(tmp_path / "big.yaml", cmdimage("big", args=["echo", huge], outputMode="remote"))
    built = cli(tmp_path, "build", ".")
    assert built.returncode == 1
    error = read_status_file(spec.with_name("big.status.yaml"))[0]["status"]["completed"]["error"]
    assert "Argument list too long" in error
    assert "(300005 characters)" in error  # the command, cut, with its length
    assert len(error) < 1000
    assert spec.with_name("big.status.yaml").stat().st_size < 4000
    assert len(built.stderr) < 4000


def test_a_command_that_leaves_a_child_holding_its_output_still_completes(
    tmp_path: Path,
) -> None:
    """`sh -c 'echo hi; sleep 300 &'`: the build is done when sh exits, not when the
    background sleep lets go of the output pipe; the sleep is ended, and the log says so."""
    pid_file = tmp_path / "child.pid"
    script = f"echo hi; sleep 300 & echo $! > {pid_file}; echo done"
    spec = write(
        tmp_path / "t" / "bg.yaml", cmdimage("bg", args=["sh", "-c", script], outputMode="remote")
    )
    built = cli(tmp_path / "t", "build", ".")
    assert built.returncode == 0, built.stderr
    assert completed_status(spec)["reason"] == "initial build"
    child = int(pid_file.read_text())
    wait_until(lambda: not running(child), f"the left-behind sleep (pid {child}) to be ended")
    log = (tmp_path / "t" / ".cmdimage-watch" / "logs" / "bg.log").read_text()
    assert "hi\ndone\n" in log
    assert "cmdimage-watch: the command exited; ending what it left running" in log


def completed_status(spec: Path) -> dict[str, str]:
    found: dict[str, str] = read_status_file(spec.with_name("bg.status.yaml"))[0]["status"][
        "completed"
    ]
    return found
