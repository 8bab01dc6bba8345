#!/usr/bin/env python3
"""The daemon's speed and cost, measured beside the floor and its peers (issue 10, SPEC §8).

In one run, on one machine: save → build latency for cmdimage-watch and, on the same save of
the same file running the same command, the floor (`inotifywait -m` from inotify-tools, no
debounce at all), entr (which waits for 50 ms without an event, as we do) and watchfiles'
own CLI; where our latency goes (the daemon's `-vv` timeline of each save); start-up at four
tree sizes and its slope; idle CPU, RSS and the cost of one save in the biggest tree; and a
fan-out of one base to many dependents at several `--max-parallel`; and a save's latency with
100 dashboards streaming events from `--ui`, against the daemon without it; and the sample
graph reused from the registry on a second engine, against building it there. Everything is reported
as measured values and ratios of this run; nothing asserts a time: the machines are shared
and noisy, read the table. `BENCHMARKS.md` holds a full run.

    scripts/bench.py [--saves N] [--images N] [--files N] [--fanout N] [--profile DIR]
                     [--json FILE] [--only latency,burst,startup,fanout,dashboard,reuse]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

QUIET_MS = 50  # the daemon's default quiet period (--debounce); entr's is the same
ANCHORS_MS = {"Tilt": 200, "docker compose": 500, "Skaffold": 1000}  # their fixed waits
STAMP = 'date +%s.%N >> "$STARTS"'  # the first thing each build command does
STEPS = ("seen", "batch", "loop", "planned", "status", "spawned")  # the daemon's timeline
TIMELINE = re.compile(r"timeline (\d+\.\d+) (\w+)")
PYTHON = sys.executable


@dataclass
class Report:
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)

    def add(self, metric: str, target: str, measured: str, note: str = "") -> None:
        self.rows.append((metric, target, measured, note))
        print(f"  {metric}: {measured}  (target {target}) {note}", flush=True)

    def markdown(self) -> str:
        lines = ["| metric | target | measured | beside the floor and peers |", "|---|---|---|---|"]
        lines += [f"| {m} | {t} | {v} | {n} |" for m, t, v, n in self.rows]
        return "\n".join(lines)


# --- trees ------------------------------------------------------------------------------


def cmd_image(name: str, command: str, starts: Path, needs: str | None = None) -> str:
    spec = {
        "apiVersion": "tilt.dev/v1alpha1",
        "kind": "CmdImage",
        "metadata": {"name": name},
        "spec": {
            "ref": f"bench-{name}",
            "args": ["sh", "-c", command],
            "env": [f"STARTS={starts}", f"NAME={name}"],
            "outputMode": "remote",
            **({"imageMaps": [f"bench-{needs}"]} if needs else {}),
        },
    }
    return json.dumps(spec)


def make_tree(root: Path, images: int, files: int, starts: Path) -> list[Path]:
    """`images` CmdImages of `files` sources each, in chains of ten (each needs the one
    before); their commands only stamp the time. The image folders, in order."""
    folders = []
    for i in range(images):
        folder = root / f"img{i:04d}"
        (folder / "src").mkdir(parents=True)
        for j in range(files):
            (folder / "src" / f"f{j}.txt").write_text(f"{i}-{j}\n" * 20)
        needs = f"img{i - 1:04d}" if i % 10 else None
        (folder / "image.yaml").write_text(cmd_image(f"img{i:04d}", STAMP, starts, needs))
        folders.append(folder)
    at_rest(root)
    return folders


def make_fanout(root: Path, dependents: int, starts: Path, seconds: float) -> Path:
    """One base and `dependents` images that need it, each running `seconds`; every command
    writes `NAME start|end TIME` lines. The base's source file."""
    (root / "base" / "src").mkdir(parents=True)
    (root / "base" / "src" / "f.txt").write_text("base\n")
    run = f'echo "$NAME start $(date +%s.%N)" >> "$STARTS"; sleep {seconds}; '
    run += 'echo "$NAME end $(date +%s.%N)" >> "$STARTS"'
    (root / "base" / "image.yaml").write_text(cmd_image("base", run, starts))
    for i in range(dependents):
        folder = root / f"dep{i:03d}"
        folder.mkdir()
        (folder / "image.yaml").write_text(cmd_image(f"dep{i:03d}", run, starts, "base"))
    at_rest(root)
    return root / "base" / "src" / "f.txt"


def at_rest(root: Path) -> None:
    """Mtimes an hour old, as a checkout's are: no file is "racy" (SPEC §5)."""
    hour_ago = time.time() - 3600
    for path in root.rglob("*"):
        os.utime(path, (hour_ago, hour_ago))


def build_once(root: Path) -> None:
    cmd = [PYTHON, "-m", "cmdimage_watch", "build", str(root), "-q", "--max-parallel", "8"]
    subprocess.run(cmd, check=True)


def stamps(path: Path) -> list[float]:
    try:
        return [float(line) for line in path.read_text().split()]
    except FileNotFoundError:
        return []


def wait_for(check: Callable[[], bool], timeout: float = 60, every: float = 0.002) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return False


# --- the daemon, the floor and the peers ------------------------------------------------


@contextmanager
def daemon(root: Path, log: Path, *flags: str) -> Iterator[subprocess.Popen[bytes]]:
    args = [PYTHON, "-m", "cmdimage_watch", "watch", str(root), "--no-tui", *flags]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        if not wait_for(lambda: "start-up done" in log.read_text(), 300):
            raise RuntimeError(f"the daemon did not start:\n{log.read_text()}")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


@contextmanager
def peer(args: list[str], starts: Path, stdin: str = "") -> Iterator[None]:
    """A watcher of another project, in a process group of its own, stamping into `starts`."""
    proc = subprocess.Popen(
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "STARTS": str(starts)},
        start_new_session=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(stdin.encode())
    proc.stdin.close()
    time.sleep(1.0)  # its watches are set (watchfiles' CLI also runs the command once)
    try:
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def floor(source: Path) -> list[str]:
    """The least a watcher can do: block on inotify, run the command on each close."""
    loop = (
        f"inotifywait -m -q -e close_write --format x {source} | while read -r _; do {STAMP}; done"
    )
    return ["sh", "-c", loop]


def watchfiles_cli(source: Path) -> list[str]:
    command = f"sh -c '{STAMP}'"  # watchfiles splits it as a shell would
    folder = str(source.parent)
    return ["watchfiles", "--filter", "all", "--target-type", "command", command, folder]


PEERS: dict[str, Callable[[Path], tuple[list[str], str]]] = {
    "floor (inotifywait)": lambda source: (floor(source), ""),
    "entr": lambda source: (["entr", "-n", "-p", "sh", "-c", STAMP], f"{source}\n"),
    "watchfiles CLI": lambda source: (watchfiles_cli(source), ""),
}


def latencies(source: Path, starts: Path, saves: int) -> list[tuple[float, float]]:
    """(save time, its build command's first instruction) of each save, one at a time."""
    found = []
    for n in range(saves):
        before = len(stamps(starts))
        saved = time.time()
        source.write_text(f"save {n} at {saved}\n")
        if not wait_for(lambda: len(stamps(starts)) > before, 10):  # noqa: B023 (called here)
            raise RuntimeError(f"a save of {source} started no build")
        found.append((saved, stamps(starts)[before]))
        time.sleep(0.3)  # the build is over: the next save finds the watcher idle
    return found


def timeline(log: Path, saves: list[tuple[float, float]]) -> list[dict[str, float]]:
    """For each save, seconds from it to each step of the daemon's timeline and to `command`."""
    marks = [(float(t), step) for t, step in TIMELINE.findall(log.read_text())]
    found = []
    for n, (saved, command) in enumerate(saves):
        end = saves[n + 1][0] if n + 1 < len(saves) else math.inf
        window = [(t, step) for t, step in marks if saved <= t < end]
        steps = {}
        for step in STEPS:
            first = next((t for t, s in window if s == step), None)
            if first is not None:
                steps[step] = first - saved
        found.append({**steps, "command": command - saved})
    return found


def steps_text(steps: dict[str, float]) -> str:
    """`seen +17.4; batch +41.0; …`: ms from the step before (the save, for the first)."""
    previous, parts = 0.0, []
    for step in (*STEPS, "command"):
        if step in steps:
            parts.append(f"{step} +{(steps[step] - previous) * 1000:.1f}")
            previous = steps[step]
    return "; ".join(parts)


def ms(value: float) -> str:
    return f"{value * 1000:.0f} ms"


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[94]


# --- the measurements -------------------------------------------------------------------


def bench_latency(work: Path, saves: int, report: Report, images: int, files: int) -> None:
    root, starts = work / f"latency-{images}", work / f"starts-{images}"
    folders = make_tree(root, images, files, starts)
    source = folders[min(9, len(folders) - 1)] / "src" / "f0.txt"  # the end of a chain
    build_once(root)
    log = work / f"daemon-latency-{images}.log"
    with daemon(root, log, "-vv"):
        ours = latencies(source, starts, saves)
    steps = timeline(log, ours)
    ours_s = [c - s for s, c in ours]
    theirs: dict[str, list[float]] = {}
    for name, how in PEERS.items():
        peer_starts = work / f"{name.split()[0]}-starts-{images}"
        args, stdin = how(source)
        with peer(args, peer_starts, stdin):
            theirs[name] = [c - s for s, c in latencies(source, peer_starts, saves)]
    o50, o95 = statistics.median(ours_s), p95(ours_s)
    quiet = QUIET_MS / 1000
    report.add(
        f"save → build command, p50 / p95, {images} image(s)",
        "",
        f"{ms(o50)} / {ms(o95)}",
        "; ".join(
            f"{name} {ms(statistics.median(v))} / {ms(p95(v))}: "
            f"ours {o50 / statistics.median(v):.1f}x"
            for name, v in theirs.items()
        ),
    )
    e50 = statistics.median(theirs["entr"])
    f50 = statistics.median(theirs["floor (inotifywait)"])
    report.add(
        f"beyond the quiet period, p50 / p95, {images} image(s)",
        "≤ 15 / 40 ms",
        f"{ms(o50 - quiet)} / {ms(o95 - quiet)}",
        f"entr beyond its 50 ms: {ms(e50 - quiet)}; the floor's whole latency: {ms(f50)}; "
        + ", ".join(f"{n} adds {w} ms ({w / 1000 / o50:.1f}x ours)" for n, w in ANCHORS_MS.items()),
    )
    medians = {
        step: statistics.median(values)
        for step in (*STEPS, "command")
        if (values := [s[step] for s in steps if step in s])
    }
    slowest = max(steps, key=lambda s: s["command"])
    report.add(
        f"where it goes (ms after the step before), {images} image(s)",
        "",
        f"p50: {steps_text(medians)}",
        f"the slowest save ({ms(slowest['command'])}): {steps_text(slowest)}",
    )


def bench_burst(work: Path, report: Report) -> None:
    root, starts = work / "burst", work / "burst-starts"
    (folder,) = make_tree(root, 1, 1, starts)
    source = folder / "src" / "f0.txt"
    with daemon(root, work / "daemon-burst.log"):
        before = len(stamps(starts))
        began = time.monotonic()
        for n in range(50):
            source.write_text(f"burst {n}\n")
            time.sleep(0.003)
        took = time.monotonic() - began
        time.sleep(1.5)
        builds = len(stamps(starts)) - before
    report.add("builds from 50 saves", "exactly 1", str(builds), f"the saves took {ms(took)}")


def start_once(root: Path, log: Path, *flags: str) -> tuple[float, float, subprocess.Popen[bytes]]:
    """Spawn the daemon; (seconds from spawn to "start-up done", what it said, the process)."""
    args = [PYTHON, "-m", "cmdimage_watch", "watch", str(root), "--no-tui", *flags]
    spawned = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    if not wait_for(lambda: "start-up done" in log.read_text(), 300, every=0.001):
        raise RuntimeError(f"the daemon did not start:\n{log.read_text()}")
    wall = time.monotonic() - spawned
    said = re.search(r"start-up done in ([0-9.]+) s", log.read_text())
    return wall, float(said.group(1)) if said else math.nan, proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


def bench_startup(
    work: Path, sizes: list[int], files: int, report: Report, profile: Path | None
) -> None:
    """Start-up with nothing to build at each size (the median of three starts after one
    that writes "up to date" everywhere), and its slope; then, in a fourth start at `-v`,
    idle CPU, RSS and one save at the last size but one."""
    walls: dict[int, float] = {}
    for images in sizes:
        root, starts = work / f"startup-{images}", work / f"startup-starts-{images}"
        folders = make_tree(root, images, files, starts)
        build_once(root)
        log = work / f"daemon-startup-{images}.log"
        stop(start_once(root, log)[2])  # the first start writes "up to date" everywhere
        runs = []
        for _ in range(3):
            wall, said, proc = start_once(root, log)
            runs.append((wall, said))
            stop(proc)
        walls[images] = statistics.median(w for w, _ in runs)
        report.add(
            f"start-up, {images} images, {images * files} files, nothing to build",
            "≤ 1.5 s at 1,000" if images == 1000 else "",
            f"{walls[images]:.2f} s from spawn",
            "in the daemon: " + ", ".join(f"{s:.2f}" for _, s in runs) + " s",
        )
        if images == sizes[-2]:
            proc = start_once(root, log, "-v")[2]
            idle_and_one_save(proc, folders, log, images, files, report)
            stop(proc)
            if profile:
                profile_startup(root, profile / f"startup-{images}")
    slope, base = fit(list(walls), list(walls.values()))
    worst = max(abs(base + slope * n - w) / w for n, w in walls.items())
    report.add(
        "start-up slope",
        "linear",
        f"{slope * 1000:.2f} ms per image",
        f"+ {base:.2f} s fixed; the line is within {worst * 100:.0f}% of every size",
    )


def fit(xs: list[int], ys: list[float]) -> tuple[float, float]:
    """Least squares: (slope, intercept)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope /= sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


def idle_and_one_save(
    proc: subprocess.Popen[bytes], folders: list[Path], log: Path, images: int, files: int,
    report: Report,
) -> None:  # fmt: skip
    process = psutil.Process(proc.pid)
    time.sleep(2)  # the inotify echoes of the status files written at start
    cpu0, t0 = sum(process.cpu_times()[:2]), time.monotonic()
    time.sleep(10)
    idle = (sum(process.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0)
    report.add("idle CPU", "≤ 0.5% of a core", f"{idle * 100:.2f}%", f"{images} images")
    rss = process.memory_info().rss / 1e6
    report.add("RSS", "≤ 100 MB at 1,000 images", f"{rss:.0f} MB", f"{images} images")
    mark = len(log.read_text().splitlines())
    (folders[9] / "src" / "f1.txt").write_text("one change\n")
    wait_for(lambda: "img0009 built" in "".join(log.read_text().splitlines()[mark:]))
    time.sleep(0.5)
    after = "\n".join(log.read_text().splitlines()[mark:])
    evaluated = re.findall(r"evaluated (\S+): (\d+) file", after)
    reads = sum(int(n) for _, n in evaluated)
    report.add(
        "one save: images evaluated, files read",
        "1, 1",
        f"{len(evaluated)}, {reads}",
        f"of {images} images, {images * files} files",
    )


def profile_startup(root: Path, out: Path) -> None:
    """py-spy's record of one start-up: a flame graph, and the top of our own functions."""
    spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    if not Path(spy).exists():
        print("  (no py-spy: pip install py-spy for --profile)")
        return
    log = out.with_suffix(".log")
    raw = out.with_suffix(".txt")
    args = [PYTHON, "-m", "cmdimage_watch", "watch", str(root), "--no-tui"]
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [spy, "record", "-r", "250", "-f", "raw", "-o", str(raw), "--", *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    wait_for(lambda: "start-up done" in log.read_text(), 300)
    for child in psutil.Process(proc.pid).children():
        child.send_signal(signal.SIGTERM)  # the daemon: py-spy then writes its record
    proc.wait(120)
    print(f"  profile of a start-up: {raw} (py-spy raw; flamegraph.pl draws it)")
    for line in top_frames(raw, "cmdimage_watch", 12):
        print(f"    {line}")


def top_frames(raw: Path, package: str, count: int) -> list[str]:
    """The functions of `package` with the most samples on their stack, inclusive."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        total += int(n)
        frames = {f.split(" (")[0] + " " + f.split("(")[-1].split(":")[0].split("/")[-1]
                  for f in stack.split(";") if f"{package}/" in f}  # fmt: skip
        for frame in frames:
            inclusive[frame] += int(n)
    return [f"{100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(count)]


def sample_checkout(into: Path, registry: str, greeting: str, step_s: int = 0) -> Path:
    """A copy of the sample whose Cluster names `registry`, with a greeting (and a tool) of
    its own, so that its inputs are new to the registry."""
    root = Path(__file__).resolve().parent.parent / "sample-project"
    shutil.copytree(root, into, ignore=shutil.ignore_patterns(".cmdimage-watch", "*.status.*"))
    (into / "base" / "greeting.txt").write_text(greeting)
    with (into / "tool" / "tool.sh").open("a") as tool:
        tool.write(f"# {greeting}")
    if step_s:  # a build step of that long, as real builds have (compiling, installing)
        with (into / "base" / "Dockerfile").open("a") as dockerfile:
            dockerfile.write(f"RUN sleep {step_s}\n")
    (into / "cluster.yaml").write_text(
        "apiVersion: tilt.dev/v1alpha1\nkind: Cluster\nmetadata: {name: default}\n"
        f"spec: {{defaultRegistry: {{host: '{registry}'}}}}\n"
    )
    return into


def timed_build(root: Path, engine: str, *flags: str) -> float:
    env = os.environ | {"DOCKER_HOST": engine, "DOCKER_BUILDKIT": "0"}
    cmd = [PYTHON, "-m", "cmdimage_watch", "build", str(root), "-q", *flags]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def bench_reuse(work: Path, report: Report, rounds: int = 3, step_s: int = 0) -> None:
    """Issue 14: the sample graph on a second engine, reused from the registry, against
    the same graph built there with the cache off. Each round has a greeting of its own;
    `step_s` adds a build step of that many seconds to sample-base."""
    first, second = os.environ.get("DOCKER_HOST", ""), os.environ.get("CIW_DOCKER_HOST_2", "")
    registry = os.environ.get("CIW_REGISTRY", "")
    if not (first and second and registry):
        sys.exit(
            "the reuse bench needs two engines and a registry: eval $(scripts/services.sh env)"
        )
    shared, reused, cold = [], [], []
    for n in range(rounds):
        greeting = f"bench {n} {time.time_ns()}\n"
        trees = [
            sample_checkout(work / f"reuse-{step_s}-{n}-{who}", registry, greeting, step_s)
            for who in "abc"
        ]
        shared.append(timed_build(trees[0], first, "--registry-cache"))
        reused.append(timed_build(trees[1], second, "--registry-cache"))
        cold.append(timed_build(trees[2], second))
    hit, built = statistics.median(reused), statistics.median(cold)
    report.add(
        f"the sample graph on a second engine, reused from the registry ({rounds} rounds"
        + (f", sample-base with a {step_s} s step)" if step_s else ")"),
        "",
        f"{hit:.2f} s",
        f"built there with the cache off: {built:.2f} s, so the reuse takes {hit / built:.2f}x; "
        f"the first clone, building and sharing: {statistics.median(shared):.2f} s",
    )


@contextmanager
def sse_clients(port: int, count: int) -> Iterator[list[int]]:
    """`count` dashboards' event streams (`/api/events`), each read as fast as it comes by
    one thread; yields how many events each has read so far."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        sock.setblocking(False)
        socks.append(sock)
    events, stop = [0] * count, threading.Event()

    def read() -> None:
        with selectors.DefaultSelector() as selector:
            for n, sock in enumerate(socks):
                selector.register(sock, selectors.EVENT_READ, n)
            while not stop.is_set():
                for key, _ in selector.select(0.1):
                    data = socks[key.data].recv(1 << 16)
                    events[key.data] += data.count(b"\ndata: ") + data.startswith(b"data: ")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield events
    finally:
        stop.set()
        reader.join()
        for sock in socks:
            sock.close()


def bench_dashboard(work: Path, saves: int, report: Report, clients: int = 100) -> None:
    """Issue 11: a save's latency with `clients` dashboards connected to `--ui`, against
    the same daemon without it."""
    root, starts = work / "ui", work / "ui-starts"
    (folder,) = make_tree(root, 1, 1, starts)
    source = folder / "src" / "f0.txt"
    build_once(root)
    with daemon(root, work / "daemon-no-ui.log"):
        plain = [c - s for s, c in latencies(source, starts, saves)]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (
        daemon(root, work / "daemon-ui.log", "--ui", f"127.0.0.1:{port}"),
        sse_clients(port, clients) as events,
    ):
        watched = [c - s for s, c in latencies(source, starts, saves)]
        time.sleep(0.3)  # the last build's events reach the clients
    p50, w50 = statistics.median(plain), statistics.median(watched)
    report.add(
        f"save → build command with {clients} dashboards streaming, p50 / p95",
        "unchanged",
        f"{ms(w50)} / {ms(p95(watched))}",
        f"without --ui {ms(p50)} / {ms(p95(plain))}: {w50 / p50:.2f}x; "
        f"each client read {min(events)} to {max(events)} events",
    )


def bench_fanout(work: Path, dependents: int, report: Report) -> None:
    """A save of the base to every dependent finished, at --max-parallel 1, 3 and 8: the
    parallelism achieved beside the limit, and the slot time left idle while a dependent
    was ready (from the base's end on, each of the `limit` slots not running one while some
    had not started)."""
    seconds = 0.2
    for limit in (1, 3, 8):
        root, starts = work / f"fanout-{limit}", work / f"fanout-starts-{limit}"
        source = make_fanout(root, dependents, starts, seconds)
        build_once(root)
        with daemon(root, work / f"daemon-fanout-{limit}.log", "--max-parallel", str(limit)):
            starts.unlink(missing_ok=True)
            saved = time.time()
            source.write_text("a change\n")
            ends = dependents + 1
            if not wait_for(lambda: sum(" end " in x for x in lines(starts)) == ends, 120):  # noqa: B023
                raise RuntimeError(f"the fan-out at --max-parallel {limit} did not finish")
        runs: dict[str, dict[str, float]] = {}
        for line in lines(starts):
            name, what, at = line.split()
            runs.setdefault(name, {})[what] = float(at)
        deps = [(r["start"], r["end"]) for n, r in runs.items() if n != "base"]
        ready, last = runs["base"]["end"], max(e for _, e in deps)
        busy = sum(e - s for s, e in deps)
        ideal = math.ceil(dependents / limit) * seconds
        idle = idle_while_ready(deps, ready, limit)
        report.add(
            f"fan-out, 1 base + {dependents} dependents of {ms(seconds)}, --max-parallel {limit}",
            "no idle slot",
            f"{ms(idle / dependents)} of slot idle per dependent",
            f"{last - saved:.2f} s from the save to all done; the dependents took "
            f"{last - ready:.2f} s from the base's end ({ideal:.2f} s with no slot ever idle), "
            f"parallelism {busy / (last - ready):.2f} of {limit}, at most {most_at_once(deps)} "
            "at once",
        )


def idle_while_ready(runs: list[tuple[float, float]], ready: float, limit: int) -> float:
    """Slot-seconds after `ready` with fewer than `limit` commands running while some had
    not started yet."""
    edges = sorted([(s, 1) for s, _ in runs] + [(e, -1) for _, e in runs])
    running, unstarted, idle, at = 0, len(runs), 0.0, ready
    for when, delta in edges:
        if when > at and unstarted:
            idle += (min(limit, running + unstarted) - running) * (when - at)
            at = when
        running += delta
        unstarted -= delta == 1
    return idle


def lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def most_at_once(runs: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in runs] + [(e, -1) for _, e in runs])
    now = most = 0
    for _, delta in edges:
        now += delta
        most = max(most, now)
    return most


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=30)
    parser.add_argument("--images", type=int, default=1000, help="the big tree's images")
    parser.add_argument("--files", type=int, default=20, help="sources per image")
    parser.add_argument("--fanout", type=int, default=50, help="dependents of one base")
    parser.add_argument("--profile", type=Path, help="py-spy records go here")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--only", default="latency,burst,startup,fanout,dashboard,reuse", help="these parts"
    )
    args = parser.parse_args()
    for tool in ("entr", "inotifywait", "watchfiles"):
        if not shutil.which(tool) and not (Path(PYTHON).parent / tool).exists():
            sys.exit(f"the bench measures {tool} beside us: run scripts/setup")
    os.environ["PATH"] = f"{Path(PYTHON).parent}{os.pathsep}{os.environ['PATH']}"
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    report = Report()
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, {sys.argv[1:]}")
    with tempfile.TemporaryDirectory(prefix="cmdimage-watch-bench.") as tmp:
        work = Path(tmp)
        parts = args.only.split(",")
        if "latency" in parts:
            print("latency, one image", flush=True)
            bench_latency(work, args.saves, report, 1, 1)
            print(f"latency, {args.images} images", flush=True)
            bench_latency(work, args.saves, report, args.images, args.files)
        if "burst" in parts:
            print("burst", flush=True)
            bench_burst(work, report)
        if "startup" in parts:
            print("start-up", flush=True)
            sizes = [args.images // 4, args.images // 2, args.images, args.images * 2]
            bench_startup(work, sizes, args.files, report, args.profile)
        if "fanout" in parts:
            print("fan-out", flush=True)
            bench_fanout(work, args.fanout, report)
        if "dashboard" in parts:
            print("dashboard", flush=True)
            bench_dashboard(work, args.saves, report)
        if "reuse" in parts:
            print("reuse", flush=True)
            bench_reuse(work, report)
            bench_reuse(work, report, rounds=2, step_s=3)
    print()
    print(report.markdown())
    if args.json:
        keys = ("metric", "target", "measured", "note")
        rows = [dict(zip(keys, row, strict=True)) for row in report.rows]
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
