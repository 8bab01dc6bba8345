"""Batching on a scripted change stream and a fake clock: the one seam is watchfiles' own
generator, replaced by a list of (time, change set) steps as watchfiles' tests do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from watchfiles import Change

from cmdimage_watch.watcher import READY, batches

Step = tuple[float, set[str]]  # when watchfiles yields, and what: an empty set is its timeout


class Script:
    def __init__(self, steps: list[Step]) -> None:
        self.steps, self.now = steps, 0.0

    def changes(self) -> Iterator[set[tuple[Change, str]]]:
        for at, paths in self.steps:
            self.now = at
            yield {(Change.modified, p) for p in paths}

    def clock(self) -> float:
        return self.now


def run(steps: list[Step], quiet: float = 0.05, cap: float = 1.0) -> list[tuple[float, set[str]]]:
    """The batches, each with the script time it was delivered at."""
    script = Script([(0.0, set()), *steps])  # watchfiles' first item: its watches are set
    found = batches(script.changes(), lambda _, path: "noise" not in path, quiet, cap, script.clock)
    assert next(found) is READY
    return [(script.now, {Path(p).name for p in batch}) for batch in found]


def test_fifty_saves_close_together_are_one_batch_after_the_quiet_period() -> None:
    saves: list[Step] = [(0.1 + i * 0.004, {"/t/src.txt"}) for i in range(50)]
    last = saves[-1][0]
    assert run([*saves, (last + 0.05, set())]) == [(last + 0.05, {"src.txt"})]


def test_a_batch_gathers_every_path_and_the_next_save_starts_a_new_one() -> None:
    steps: list[Step] = [
        (0.1, {"/t/a.txt"}),
        (0.12, {"/t/b.txt"}),
        (0.17, set()),
        (0.5, {"/t/a.txt"}),
        (0.55, set()),
    ]
    assert run(steps) == [(0.17, {"a.txt", "b.txt"}), (0.55, {"a.txt"})]


def test_saves_that_never_stop_are_cut_at_the_cap() -> None:
    saves: list[Step] = [(0.1 + i * 0.01, {f"/t/{i}.txt"}) for i in range(100)]  # to 1.09 s
    got = run(saves, quiet=0.05, cap=0.5)
    assert [at for at, _ in got] == [0.6, 1.09]
    assert got[0][1] == {f"{i}.txt" for i in range(51)}  # the rest waits for the next batch
    assert got[1][1] == {f"{i}.txt" for i in range(51, 100)}  # or for the watcher's stop


def test_ignored_noise_does_not_hold_a_batch_back() -> None:
    """A log file rewritten every 10 ms keeps watchfiles from ever timing out; the save
    still goes out `quiet` after it was made."""
    noise: list[Step] = [(0.1 + i * 0.01, {"/t/noise.log"}) for i in range(30)]
    steps = sorted([*noise, (0.105, {"/t/src.txt"})], key=lambda s: s[0])
    assert run(steps) == [(0.16, {"src.txt"})]


def test_noise_alone_makes_no_batch() -> None:
    assert run([(0.1, {"/t/noise.log"}), (0.15, set()), (0.3, set())]) == []
