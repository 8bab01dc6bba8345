"""What `cmdimage-watch watch` shows: the live table on a real terminal, plain lines, JSON.

The terminal is tmux (its own server on a private socket per test): the daemon runs in a
200x40 pane and the test reads the screen with `capture-pane`, as a person would see it.
Off a terminal the daemon's output goes to a file. JSON output and `status --json` are checked
against the schemas in tests/schemas. Real engine, real files, real processes; nothing mocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import psutil
import pytest
from rich.color import Color

from cmdimage_watch import views
from tests.conftest import remove_images
from tests.daemon_harness import (
    Watchers,
    cli,
    status_docs,
    status_of,
)
from tests.helpers import schema
from tests.helpers.polling import wait_until
from tests.helpers.processes import running
from tests.helpers.tree import Tree

SPINNER = "[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]"  # rich's "dots"
CLOCK = r"\d\d:\d\d:\d\d"
DOCKERFILE = "FROM cmdimage-watch/busybox:latest\nCOPY content.txt /content.txt\n"
DOCKER_BUILD = 'docker build --network none -t "$EXPECTED_REF" .'


@pytest.fixture
def tree(tmp_path: Path, docker_client: docker.DockerClient) -> Iterator[Tree]:
    made = Tree(tmp_path / "tree", tmp_path / "out", f"ciw-term-{uuid.uuid4().hex[:10]}").make()
    made.img.mkdir(parents=True)
    (made.img / "Dockerfile").write_text(DOCKERFILE)
    (made.img / "content.txt").write_text("one\n")
    yield made
    remove_images(docker_client, made.uid)


def watch_args(root: Path, *flags: str) -> list[str]:
    args = [sys.executable, "-m", "cmdimage_watch", "watch", str(root), "--debounce", "0.05"]
    return [*args, "--stop-timeout", "1", *flags]


# --- a terminal: tmux ----------------------------------------------------------------------


class Screen:
    """One command in a detached 200x40 tmux pane, on a tmux server of its own.

    The pane runs `sh -c 'DAEMON; echo $? > exit'`: tmux's own record of an exit status
    (`pane_dead_status`) sometimes never arrives, so the shell writes it to a file.
    """

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.socket = f"ciw-{uuid.uuid4().hex[:12]}"
        self.session = "watch"
        self.env = env
        self.conf = tmp_path / "tmux.conf"
        self.exit = tmp_path / "exit-status"
        self.pid = 0
        # remain-on-exit: the last screen stays readable after the daemon exits
        self.conf.write_text("set -g remain-on-exit on\nset -g status off\n")

    def tmux(self, *args: str) -> str:
        command = ["tmux", "-u", "-L", self.socket, "-f", str(self.conf), *args]
        done = subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout

    def start(self, args: list[str]) -> None:
        command = f"{shlex.join(args)}; echo $? > {shlex.quote(str(self.exit))}"
        self.tmux("new-session", "-d", "-s", self.session, "-x", "200", "-y", "40", command)
        shell = psutil.Process(int(self.pane("pane_pid")))
        self.pid = wait_until(lambda: [c.pid for c in shell.children()], "the daemon")[0]

    def pane(self, field: str) -> str:
        return self.tmux("display-message", "-p", "-t", self.session, f"#{{{field}}}").strip()

    def text(self, *flags: str) -> str:
        captured = self.tmux("capture-pane", "-p", "-t", self.session, *flags)
        return "\n".join(line.rstrip() for line in captured.splitlines())

    def wait_for(self, pattern: str, what: str) -> re.Match[str]:
        """Poll the visible screen until a line matches `pattern`."""

        def found() -> re.Match[str] | None:
            match = re.search(pattern, self.text(), re.MULTILINE)
            if match is None and self.exit.exists():
                raise AssertionError(f"the daemon exited: no {what} ({pattern!r}) on the screen")
            return match

        try:
            return wait_until(found, f"{what} ({pattern!r}) on the screen")
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{self.text()}") from None

    def stop(self) -> int:
        """SIGTERM to the daemon by pid; its exit status."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)

        def exit_text() -> str | None:
            return self.exit.read_text() if self.exit.exists() else None

        return int(wait_until(exit_text, "the exit"))

    def close(self) -> None:
        if self.pid and running(self.pid) and not self.exit.exists():
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.SubprocessError):
            self.tmux("kill-session", "-t", self.session)


@pytest.fixture
def screen(tmp_path: Path, env: dict[str, str]) -> Iterator[Screen]:
    made = Screen(tmp_path, env)
    try:
        yield made
    finally:
        made.close()


def row(name: str, *cells: str) -> str:
    """A pattern for a table row: the name, then these cells, separated by spaces."""
    return rf"^{re.escape(name)}\s+" + r"\s+".join(cells)


def test_the_live_table_shows_building_then_ok_with_the_ref_then_failed_with_the_error(
    tree: Tree, screen: Screen
) -> None:
    name = "ptyimg"
    script = f"echo about to build; sleep 2; {DOCKER_BUILD}"
    spec = tree.img_spec(name, "sh", "-c", script, env=["DOCKER_BUILDKIT=0"])
    screen.start(watch_args(tree.root))

    building = row(name, f"{SPINNER} building", "initial build", r"(\d+\.\d)s$")
    first = screen.wait_for(building, "building row with a spinner")[1]
    other = row(name, f"{SPINNER} building", "initial build", rf"(?!{first}s)(\d+\.\d)s$")
    later = screen.wait_for(other, "building row whose elapsed time grows")[1]
    assert float(later) > float(first)
    ok = row(name, "ok", "initial build", r"\S+ ago", r"\d+\.\ds", r"(\S+:tilt-[0-9a-f]{16})$")
    ref = screen.wait_for(ok, "ok row with the ref")[1]
    # the table shows the daemon's memory at once; its status file follows within a flush
    wait_until(lambda: "ref" in status_of(spec, "CmdImage", name), "the ref in the status file")
    assert ref == status_of(spec, "CmdImage", name)["ref"]
    assert ref.startswith(f"{tree.uid}:tilt-")

    tree.img_spec(name, "sh", "-c", "echo about to fail; exit 3")
    error = 'Custom build "echo about to fail; exit 3" failed: exit status 3; see the log'
    failed = row(name, "failed", "spec changed", r"\S+ ago", r"\d+\.\ds", re.escape(error))
    screen.wait_for(failed, "failed row with the first line of the error")
    screen.wait_for(r"^IMAGE\s+STATE\s+CAUSE\s+AGE\s+TIME\s+REF\s+ERROR\s*$", "the header")

    everything = screen.text("-J", "-S", "-")  # the scrolled build output too
    for line in ("about to build", "Step 1/2 : FROM cmdimage-watch/busybox:latest"):
        assert f"\n{name} | {line}\n" in everything
    assert f"\n{name} | about to fail\n" in everything
    assert f"ERROR   {name} failed: {error}" in everything
    # the name has its own colour, in the output's prefix and in the table
    sgr = re.escape(f"\x1b[{Color.parse(views.colour(name)).get_ansi_codes()[0]}m")
    coloured = screen.text("-e", "-J", "-S", "-")
    assert re.search(rf"^(\x1b\[\d+m)*{sgr}(\x1b\[\d+m)*{name} \| about to fail$", coloured, re.M)
    assert re.search(rf"^(\x1b\[\d+m)*{sgr}(\x1b\[\d+m)*{name}\x1b\[39m +\S+failed", coloured, re.M)
    assert screen.stop() == 0


def cheap_failure(tree: Tree, name: str) -> Path:
    """A build that prints a line and fails at once, with no Docker check."""
    script = "echo hello from the build; exit 3"
    return tree.img_spec(name, "sh", "-c", script, outputMode="remote")


def test_no_tui_on_a_terminal_prints_plain_timestamped_lines(tree: Tree, screen: Screen) -> None:
    cheap_failure(tree, "plainimg")
    screen.start(watch_args(tree.root, "--no-tui"))
    screen.wait_for(rf"^{CLOCK} ERROR   plainimg failed: ", "the failure logged")
    assert screen.stop() == 0
    text = screen.text("-J", "-S", "-")
    shown = [s for s in text.splitlines() if s and not s.startswith("Pane is dead")]
    assert any(re.fullmatch(rf"{CLOCK} plainimg \| hello from the build", s) for s in shown)
    assert all(re.match(rf"{CLOCK} ", line) for line in shown), shown
    assert not any("IMAGE" in line or re.search(SPINNER, line) for line in shown)


def test_off_a_terminal_the_output_is_plain_timestamped_lines(
    tmp_path: Path, tree: Tree, env: dict[str, str]
) -> None:
    cheap_failure(tree, "pipeimg")
    watchers = Watchers(tmp_path / "logs", env)
    try:
        watcher = watchers.start(tree.root)
        watcher.wait_log("pipeimg failed: ")
        assert watcher.stop() == 0
    finally:
        watchers.stop_all()
    lines = watcher.output().splitlines()
    assert any(re.fullmatch(rf"{CLOCK} pipeimg \| hello from the build", s) for s in lines)
    assert any(re.match(rf"{CLOCK} ERROR   pipeimg failed: Custom build ", s) for s in lines)
    assert all(re.match(rf"{CLOCK} ", line) for line in lines), lines
    assert "\x1b" not in watcher.output()
    assert not any("IMAGE" in line or re.search(SPINNER, line) for line in lines)


# --- JSON for tools ------------------------------------------------------------------------


class JsonDaemon:
    """`watch --log-format json` with stdout (the JSON lines) and stderr in files of their own."""

    def __init__(self, tmp_path: Path, root: Path, env: dict[str, str]) -> None:
        self.out, self.err = tmp_path / "stdout.jsonl", tmp_path / "stderr.jsonl"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                watch_args(root, "--log-format", "json"),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=env,
            )

    def events(self) -> list[dict[str, Any]]:
        """Every complete line of stdout, parsed (a line being written is left for later)."""
        text = self.out.read_text("utf-8")
        return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]

    def wait_event(self, kind: str, count: int = 1, **fields: str) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the daemon exited: {self.err.read_text()}")
            found = [e for e in self.events() if e["event"] == kind]
            return len([e for e in found if fields.items() <= e.items()]) >= count

        wait_until(seen, f"{count} {kind} event(s) with {fields}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def status_json(root: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    """`status --json`, checked against its schema."""
    done = cli("status", root, "--json", env=env)
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    schema("status").validate(rows)
    assert done.stderr == ""
    assert done.returncode == int(any(r["state"] in ("failed", "invalid") for r in rows))
    return rows


def collapsed(events: list[dict[str, Any]], name: str) -> list[str]:
    """The `event` of each event for `name` or for no image, a run of output lines as one."""
    kinds = [e["event"] for e in events if e.get("image", name) == name]
    return [k for i, k in enumerate(kinds) if k != "output" or kinds[i - 1 : i] != ["output"]]


def test_json_events_and_status_json_follow_their_schemas(
    tmp_path: Path, tree: Tree, env: dict[str, str]
) -> None:
    name = "jsonimg"
    good = ("echo good", DOCKER_BUILD)
    tree.script(*good)
    spec = tree.img_spec(name, "sh", "build.sh", env=["DOCKER_BUILDKIT=0"])
    daemon = JsonDaemon(tmp_path, tree.root, env)
    try:
        daemon.wait_event("build_finished")
        [built] = status_json(tree.root, env)
        assert (built["name"], built["state"], built["reason"]) == (name, "ok", "initial build")
        dot = cli("graph", tree.root, env=env).stdout
        assert f'  "{name}" [label="{name}\\nok", color=green];\n' in dot

        tree.script("echo bad", "exit 3")
        daemon.wait_event("build_failed")
        assert [r["state"] for r in status_json(tree.root, env)] == ["failed"]

        tree.script("echo slow", "sleep 30")
        daemon.wait_event("output", line="slow")
        [busy] = status_json(tree.root, env)  # the daemon runs, the build too
        assert (busy["state"], busy["finishedAt"]) == ("building", None)
        tree.script(*good)  # the inputs of the last good build: nothing to build
        daemon.wait_event("up_to_date")

        spec_text = spec.read_text()
        spec.write_text(spec_text + "kind: [\n")
        daemon.wait_event("spec_error", file=str(spec))
        broken = cli("status", tree.root, "--json", env=env)
        schema("status").validate(json.loads(broken.stdout))
        [error] = [e["error"] for e in daemon.events() if e["event"] == "spec_error"]
        assert (broken.returncode, broken.stderr) == (1, f"{error}\n")
        # its image keeps its row (and its node): the last status, with the file's error
        dot = cli("graph", tree.root, env=env).stdout
        assert f'  "{name}" [label="{name}\\nok", color=green];\n' in dot
        [kept] = json.loads(broken.stdout)
        assert (kept["name"], kept["state"], kept["ref"], kept["error"]) == (
            name,
            "ok",
            built["ref"],
            error,
        )
        spec.write_text(spec_text)
        wait_until(lambda: all(d["kind"] != "SpecFileError" for d in status_docs(spec)), "the fix")
        assert daemon.stop() == 0
    finally:
        daemon.stop()

    events = daemon.events()
    check = schema("events")
    for event in events:
        check.validate(event)
    assert daemon.out.read_text("utf-8").endswith("\n")
    assert collapsed(events, name) == [
        *("build_started", "output", "build_finished"),
        *("build_started", "output", "build_failed"),
        *("build_started", "output", "build_cancelled", "up_to_date"),
        "spec_error",
    ]
    [after] = status_json(tree.root, env)  # the daemon has stopped
    assert (after["name"], after["state"], after["ref"]) == (name, "ok", built["ref"])
