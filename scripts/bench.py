#!/usr/bin/env python3
"""SPEC §8, measured: latency, bursts, start-up, idle cost and the cost of one change.

Everything runs here and now, beside its peer entr (`scripts/services.sh install` puts it
on the machine; watchexec is not to be had from this machine's registries), and is
reported as measured values and ratios of this run. Nothing asserts a time: the machines
are shared and noisy; read the table.

    scripts/bench.py [--saves N] [--images N] [--files N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ANCHORS_MS = {"tilt": 200, "docker compose": 500, "skaffold": 1000}  # their fixed waits
STAMP = 'date +%s.%N >> "$STARTS"'  # the first thing each build command does


@dataclass
class Report:
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)

    def add(self, metric: str, target: str, measured: str, note: str = "") -> None:
        self.rows.append((metric, target, measured, note))
        print(f"  {metric}: {measured}  (target {target}) {note}", flush=True)

    def markdown(self) -> str:
        lines = ["| metric | target | measured | beside peers |", "|---|---|---|---|"]
        lines += [f"| {m} | {t} | {v} | {n} |" for m, t, v, n in self.rows]
        return "\n".join(lines)


# --- trees ------------------------------------------------------------------------------


def make_tree(root: Path, images: int, files: int, starts: Path) -> list[Path]:
    """`images` CmdImages of `files` sources each, in chains of ten (each needs the one
    before); their commands only stamp the time. The source folders, in order."""
    folders = []
    for i in range(images):
        folder = root / f"img{i:04d}"
        (folder / "src").mkdir(parents=True)
        for j in range(files):
            (folder / "src" / f"f{j}.txt").write_text(f"{i}-{j}\n" * 20)
        spec = {
            "apiVersion": "tilt.dev/v1alpha1",
            "kind": "CmdImage",
            "metadata": {"name": f"img{i:04d}"},
            "spec": {
                "ref": f"bench-img{i:04d}",
                "args": ["sh", "-c", STAMP],
                "env": [f"STARTS={starts}"],
                "outputMode": "remote",
                **({"imageMaps": [f"bench-img{i - 1:04d}"]} if i % 10 else {}),
            },
        }
        (folder / "image.yaml").write_text(json.dumps(spec))
        folders.append(folder)
    hour_ago = time.time() - 3600
    for path in root.rglob("*"):  # a tree at rest, as a checkout is: mtimes not "racy"
        os.utime(path, (hour_ago, hour_ago))
    return folders


def stamps(path: Path) -> list[float]:
    try:
        return [float(line) for line in path.read_text().split()]
    except FileNotFoundError:
        return []


def wait_for(check: Callable[[], bool], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.005)
    return False


# --- the daemon and its peers -----------------------------------------------------------


@contextmanager
def daemon(root: Path, log: Path, *flags: str) -> Iterator[subprocess.Popen[bytes]]:
    args = [sys.executable, "-m", "cmdimage_watch", "watch", str(root), "--no-tui", *flags]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        if not wait_for(lambda: "start-up done" in log.read_text(), 120):
            raise RuntimeError(f"the daemon did not start:\n{log.read_text()}")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


@contextmanager
def entr(source: Path, starts: Path) -> Iterator[None]:
    proc = subprocess.Popen(
        ["entr", "-n", "-p", "sh", "-c", STAMP],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "STARTS": str(starts)},
        start_new_session=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(f"{source}\n".encode())
    proc.stdin.close()
    time.sleep(0.5)  # entr sets its watches
    try:
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def more_than(path: Path, count: int) -> Callable[[], bool]:
    return lambda: len(stamps(path)) > count


def latencies(source: Path, starts: Path, saves: int) -> list[float]:
    """Seconds from each save to the build command's start, one save at a time."""
    found = []
    for n in range(saves):
        before = len(stamps(starts))
        saved = time.time()
        source.write_text(f"save {n} at {saved}\n")
        if not wait_for(more_than(starts, before), 10):
            raise RuntimeError("a save started no build")
        found.append(stamps(starts)[before] - saved)
        time.sleep(0.25)  # let the build finish: the next save finds the watcher idle
    return found


def ms(value: float) -> str:
    return f"{value * 1000:.0f} ms"


def percentile(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


# --- the measurements -------------------------------------------------------------------


def bench_latency(work: Path, saves: int, report: Report, images: int) -> None:
    root, starts = work / f"latency-{images}", work / f"starts-{images}"
    folders = make_tree(root, images, 20 if images > 1 else 1, starts)
    target = folders[min(9, len(folders) - 1)] / "src" / "f0.txt"  # the end of a chain
    subprocess.run([sys.executable, "-m", "cmdimage_watch", "build", str(root), "-q"], check=True)
    with daemon(root, work / f"daemon-latency-{images}.log"):
        ours = latencies(target, starts, saves)
    entr_starts = work / f"entr-starts-{images}"
    with entr(target, entr_starts):
        theirs = latencies(target, entr_starts, saves)
    p50, p95 = statistics.median(ours), percentile(ours, 95)
    e50, e95 = statistics.median(theirs), percentile(theirs, 95)
    peers = [f"entr {ms(e50)}: ours {p50 / e50:.2f}x (entr has no debounce; ours waits 50 ms)"]
    peers += [
        f"{name} waits {wait} ms ({wait / 1000 / p50:.1f}x ours)"
        for name, wait in ANCHORS_MS.items()
    ]
    peers.append("watchexec: not available from this machine's registries")
    report.add(f"save to build start, p50, {images} image(s)", "≤ 75 ms", ms(p50), "; ".join(peers))
    report.add(
        f"save to build start, p95, {images} image(s)",
        "≤ 110 ms",
        ms(p95),
        f"entr {ms(e95)}: ours {p95 / e95:.2f}x",
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


def bench_big_tree(work: Path, images: int, files: int, report: Report) -> None:
    root, starts = work / "big", work / "big-starts"
    folders = make_tree(root, images, files, starts)
    subprocess.run([sys.executable, "-m", "cmdimage_watch", "build", str(root), "-q"], check=True)
    log = work / "daemon-big.log"
    spawned = time.monotonic()
    with daemon(root, log, "-v") as proc:
        wall = time.monotonic() - spawned
        said = re.search(r"start-up done in ([0-9.]+) s: (.*)", log.read_text())
        report.add(
            f"start-up, {images} images, {images * files} files, nothing to build",
            "≤ 3 s",
            f"{wall:.2f} s from spawn",
            said.group(0) if said else "",
        )
        process = psutil.Process(proc.pid)
        time.sleep(2)  # the inotify echoes of a thousand status files written at start
        cpu0, t0 = sum(process.cpu_times()[:2]), time.monotonic()
        time.sleep(10)
        idle = (sum(process.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0)
        report.add("idle CPU", "≤ 1% of a core", f"{idle * 100:.2f}%")
        report.add("RSS", "≤ 150 MB", f"{process.memory_info().rss / 1e6:.0f} MB")
        mark = len(log.read_text().splitlines())
        (folders[9] / "src" / "f3.txt").write_text("one change\n")
        wait_for(lambda: "img0009 built" in "".join(log.read_text().splitlines()[mark:]))
        time.sleep(0.5)
        evaluated = re.findall(
            r"evaluated (\S+): (\d+) file", "\n".join(log.read_text().splitlines()[mark:])
        )
    reads = sum(int(n) for _, n in evaluated)
    report.add(
        "one save: images evaluated, files read",
        "1, 1",
        f"{len(evaluated)}, {reads}",
        f"of {images} images, {images * files} files",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=30)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not shutil.which("entr"):
        sys.exit("the bench measures entr beside us: run scripts/services.sh install")
    report = Report()
    with tempfile.TemporaryDirectory(prefix="cmdimage-watch-bench.") as tmp:
        work = Path(tmp)
        print("latency, one image", flush=True)
        bench_latency(work, args.saves, report, 1)
        print(f"latency, {args.images} images", flush=True)
        bench_latency(work, args.saves, report, args.images)
        print("burst", flush=True)
        bench_burst(work, report)
        print("big tree", flush=True)
        bench_big_tree(work, args.images, args.files, report)
    print()
    print(report.markdown())
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    dict(zip(("metric", "target", "measured", "note"), row, strict=True))
                    for row in report.rows
                ],
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
