"""Batching on a scripted change stream and a fake clock: the one seam is the Rust watcher's
`watch` call, replaced by a list of (time, change set) steps as watchfiles' tests do."""

from __future__ import annotations

from pathlib import Path

from watchfiles import Change

from cmdimage_watch.watcher import Changes, batches

Step = tuple[float, set[str]]  # when the watcher returns, and what: an empty set is its timeout


class Script:
    def __init__(self, steps: list[Step]) -> None:
        self.steps, self.now = list(steps), 0.0
        self.timeouts: list[float | None] = []  # what each wait asked for

    def wait(self, timeout: float | None) -> tuple[Changes, float] | None:
        self.timeouts.append(timeout)
        if not self.steps:
            return None  # stopped
        self.now, paths = self.steps.pop(0)
        return {(Change.modified.value, p) for p in paths}, self.now

    def clock(self) -> float:
        return self.now


def run(steps: list[Step], quiet: float = 0.05, cap: float = 1.0) -> list[tuple[float, set[str]]]:
    """The batches, each with the script time it was delivered at."""
    script = Script(steps)
    found = batches(script.wait, lambda _, path: "noise" not in path, quiet, cap, script.clock)
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


def test_idle_waits_without_a_timeout_and_a_batch_asks_for_what_is_left_of_quiet() -> None:
    """Between batches nothing needs waking up for; once a change came, the watcher is asked
    to return by the batch's deadline, counted from when the change came."""
    script = Script([(0.1, {"/t/a.txt"}), (0.13, {"/t/b.txt"}), (0.18, set()), (0.5, set())])
    found = batches(script.wait, lambda _, __: True, 0.05, 1.0, script.clock)
    assert next(found) == {Path("/t/a.txt"), Path("/t/b.txt")}
    assert script.timeouts[0] is None
    assert script.timeouts[1] is not None and abs(script.timeouts[1] - 0.05) < 1e-9
    assert script.timeouts[2] is not None and abs(script.timeouts[2] - 0.05) < 1e-9
    assert list(found) == []
    assert script.timeouts[3:] == [None, None]


def test_ignored_noise_does_not_hold_a_batch_back() -> None:
    """A log file rewritten every 10 ms keeps watchfiles from ever timing out; the save
    still goes out `quiet` after it was made."""
    noise: list[Step] = [(0.1 + i * 0.01, {"/t/noise.log"}) for i in range(30)]
    steps = sorted([*noise, (0.105, {"/t/src.txt"})], key=lambda s: s[0])
    assert run(steps) == [(0.16, {"src.txt"})]


def test_noise_alone_makes_no_batch() -> None:
    assert run([(0.1, {"/t/noise.log"}), (0.15, set()), (0.3, set())]) == []
