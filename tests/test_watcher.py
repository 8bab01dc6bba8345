"""Batching on a scripted change stream and a fake clock: the one seam is the Rust watcher's
`watch` call, replaced by a list of (time, change set) steps as watchfiles' tests do."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from watchfiles import Change

from cmdimage_watch.watcher import (
    BUDGET_SHARE,
    READY,
    Changes,
    Doorbell,
    Watcher,
    batches,
    watch_budget,
)

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


def test_the_doorbell_rings_for_a_change_in_its_folders_and_for_its_wake_pipe(
    tmp_path: Path,
) -> None:
    wake_r, wake_w = os.pipe()
    doorbell = Doorbell.on([str(tmp_path)], wake_r)
    assert doorbell is not None
    try:
        assert doorbell.wait(0.05) is False  # nothing happened
        (tmp_path / "src.txt").write_text("a save\n")
        assert doorbell.wait(5) is True
        assert doorbell.wait(0.05) is False  # what rang was read away
        os.write(wake_w, b"x")
        assert doorbell.wait(5) is True  # `close` wakes a sleeping watcher
    finally:
        doorbell.close()
        os.close(wake_r)
        os.close(wake_w)


def test_no_doorbell_for_a_folder_it_cannot_watch(tmp_path: Path) -> None:
    assert Doorbell.on([str(tmp_path), str(tmp_path / "gone")], 0) is None


@pytest.mark.parametrize("doorbell", [True, False], ids=["doorbell", "stepping"])
def test_a_save_makes_one_batch_with_or_without_a_doorbell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, doorbell: bool
) -> None:
    """Without a doorbell (no inotify watches left for it) the watcher looks every step."""
    if not doorbell:
        monkeypatch.setattr(Doorbell, "on", classmethod(lambda cls, dirs, wake: None))

    async def one_batch() -> frozenset[Path]:
        watcher = Watcher({tmp_path}, lambda _, __: True, 0.05, 1.0, poll=False)
        try:
            assert await anext(watcher.stream) == READY
            (tmp_path / "src.txt").write_text("a save\n")
            return await asyncio.wait_for(anext(watcher.stream), 10)
        finally:
            await watcher.close()

    assert asyncio.run(one_batch()) == {tmp_path / "src.txt"}


def test_a_change_before_the_doorbell_is_made_is_found_without_a_ring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Rust watcher's watches are in place before the doorbell's: a save in between
    rings nothing. Silent doorbells are looked past only every CHECK_S (made an hour here),
    so the save arrives only if the watcher looks once before its first sleep."""
    made = Doorbell.on
    monkeypatch.setattr("cmdimage_watch.watcher.CHECK_S", 3600.0)

    def late(cls: type[Doorbell], dirs: list[str], wake: int) -> Doorbell | None:
        (tmp_path / "between.txt").write_text("saved before the doorbell\n")
        return made(dirs, wake)

    monkeypatch.setattr(Doorbell, "on", classmethod(late))

    async def first_batch() -> frozenset[Path]:
        watcher = Watcher({tmp_path}, lambda _, __: True, 0.05, 1.0, poll=False)
        try:
            assert await anext(watcher.stream) == READY
            return await asyncio.wait_for(anext(watcher.stream), 10)
        finally:
            await watcher.close()

    assert asyncio.run(first_batch()) == {tmp_path / "between.txt"}


def test_no_doorbell_when_its_watches_could_starve_the_watcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two watchers overlap while the folders change: a doorbell must not be why the next
    one runs out of inotify watches (and the whole tree is polled from then on)."""
    folders = [str(tmp_path)] * 10
    monkeypatch.setattr("cmdimage_watch.watcher.watch_budget", lambda: 10 * BUDGET_SHARE - 1)
    assert Doorbell.on(folders, 0) is None
    monkeypatch.setattr("cmdimage_watch.watcher.watch_budget", lambda: 10 * BUDGET_SHARE)
    doorbell = Doorbell.on(folders, 0)
    assert doorbell is not None
    doorbell.close()


def test_the_watch_budget_is_the_lower_of_the_sysctl_and_the_user_namespace() -> None:
    limits = [
        int(Path(p).read_text())
        for p in ("/proc/sys/fs/inotify/max_user_watches", "/proc/sys/user/max_inotify_watches")
        if Path(p).exists()
    ]
    assert limits
    assert watch_budget() == min(limits)
