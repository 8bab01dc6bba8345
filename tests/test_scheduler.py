"""The scheduler on virtual time (looptime): ordering, coalescing, limits, cancellation.

The one faked seam is the builder: builds here are timed sleeps that record when they
start, end or are cancelled. Specs, sources and hashing are real files.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from cmdimage_watch import models, refs, status
from cmdimage_watch.builder import Builder, BuildError, BuildRequest, BuildResult
from cmdimage_watch.graph import Image
from cmdimage_watch.reconcile import Reconciler
from cmdimage_watch.scheduler import Scheduler, run_once
from cmdimage_watch.settings import Settings
from tests.helpers import cmdimage, index_of, on_virtual_time, write

Event = tuple[str, str, float]


class FakeBuilder(Builder):
    """Builds that take `durations[name]` seconds of loop time and record what happened."""

    def __init__(self, durations: dict[str, float], fail: set[str] | None = None) -> None:
        super().__init__(log_dir=Path("/nonexistent"))
        self.durations = durations
        self.fail = fail or set()
        self.events: list[Event] = []
        self.seen: dict[str, list[str]] = {}  # the source text each finished build saw

    async def build(self, request: BuildRequest) -> BuildResult:
        name, loop = request.image.name, asyncio.get_running_loop()
        self.events.append(("start", name, loop.time()))
        try:
            await asyncio.sleep(self.durations.get(name, 1.0))
        except asyncio.CancelledError:
            self.events.append(("cancel", name, loop.time()))
            raise
        self.events.append(("done", name, loop.time()))
        source = request.image.dir / "src.txt"
        self.seen.setdefault(name, []).append(source.read_text() if source.exists() else "")
        if name in self.fail:
            raise BuildError(f"{name} broke")
        ref = refs.parse_ref(request.image.spec.ref).with_tag(f"tilt-{len(self.events)}")
        return BuildResult(ref, ref)

    async def exists(self, image: Image, cluster: models.Cluster | None, ref: str) -> bool:
        return True


def _tree(tmp_path: Path, *images: tuple[str, list[str]]) -> Path:
    docs = []
    for name, maps in images:
        (tmp_path / name).mkdir()
        (tmp_path / name / "src.txt").write_text("v1")
        docs.append(cmdimage(name, dir=name, imageMaps=maps))
    return write(tmp_path / "images.yaml", *docs)


def _scheduler(tmp_path: Path, builder: FakeBuilder, spec: Path, **settings: object) -> Scheduler:
    config = Settings(root=tmp_path, **settings)
    return Scheduler(Reconciler(index_of(spec), builder, config))


def _since(events: list[Event], t0: float) -> list[Event]:
    return [(kind, name, round(t - t0, 3)) for kind, name, t in events]


@on_virtual_time
async def test_dependents_wait_for_their_bases_and_the_limit_holds(tmp_path: Path) -> None:
    spec = _tree(tmp_path, ("base", []), ("app", ["base"]), ("x", []), ("y", []))
    builder = FakeBuilder({"base": 10, "app": 5, "x": 10, "y": 10})
    scheduler = _scheduler(tmp_path, builder, spec, max_parallel=2)
    t0 = asyncio.get_running_loop().time()
    assert await run_once(scheduler, None)
    events = _since(builder.events, t0)
    starts = {name: t for kind, name, t in events if kind == "start"}
    dones = {name: t for kind, name, t in events if kind == "done"}
    # which two of base, x and y go first depends on whose sources hash first
    assert sorted(starts.values())[:2] == [0, 0]
    assert starts["app"] == dones["base"]
    assert _most_at_once(events) == 2
    assert sorted(dones) == ["app", "base", "x", "y"]


def _most_at_once(events: list[Event]) -> int:
    running, most = 0, 0
    for kind, _, _ in sorted(events, key=lambda e: (e[2], e[0] == "start")):
        running += 1 if kind == "start" else -1
        most = max(most, running)
    return most


@on_virtual_time
async def test_requests_for_a_busy_image_coalesce(tmp_path: Path) -> None:
    spec = _tree(tmp_path, ("a", []))
    builder = FakeBuilder({"a": 10})
    scheduler = _scheduler(tmp_path, builder, spec, on_change="queue")
    scheduler.request(["a"])
    await asyncio.sleep(1)
    for _ in range(5):
        scheduler.request(["a"])  # nothing changed: the extra pass finds it up to date
    await scheduler.wait_idle()
    assert [kind for kind, _, _ in builder.events] == ["start", "done"]


@on_virtual_time
async def test_queue_mode_finishes_then_builds_the_new_content(tmp_path: Path) -> None:
    spec = _tree(tmp_path, ("a", []))
    builder = FakeBuilder({"a": 10})
    scheduler = _scheduler(tmp_path, builder, spec, on_change="queue")
    t0 = asyncio.get_running_loop().time()
    scheduler.request(["a"])
    await asyncio.sleep(2)
    (tmp_path / "a" / "src.txt").write_text("v2")
    scheduler.request(["a"])
    await scheduler.wait_idle()
    assert _since(builder.events, t0) == [
        ("start", "a", 0),
        ("done", "a", 10),
        ("start", "a", 10),
        ("done", "a", 20),
    ]
    assert builder.seen["a"] == ["v2", "v2"]  # the first build read v2 late: why restart exists
    assert scheduler.reconciler.state.images["a"].completed is not None


@on_virtual_time
async def test_restart_mode_cancels_the_stale_build_and_rebuilds_at_once(tmp_path: Path) -> None:
    spec = _tree(tmp_path, ("a", []))
    builder = FakeBuilder({"a": 10})
    scheduler = _scheduler(tmp_path, builder, spec, on_change="restart")
    t0 = asyncio.get_running_loop().time()
    scheduler.request(["a"])
    await asyncio.sleep(2)
    (tmp_path / "a" / "src.txt").write_text("v2")
    scheduler.request(["a"])
    await scheduler.wait_idle()
    assert _since(builder.events, t0) == [
        ("start", "a", 0),
        ("cancel", "a", 2),
        ("start", "a", 2),
        ("done", "a", 12),
    ]
    assert builder.seen["a"] == ["v2"]
    done = scheduler.reconciler.state.images["a"].completed
    assert done is not None
    assert done.reason == "initial build"
    assert not done.error


@on_virtual_time
async def test_a_request_without_a_content_change_does_not_cancel(tmp_path: Path) -> None:
    spec = _tree(tmp_path, ("a", []))
    builder = FakeBuilder({"a": 10})
    scheduler = _scheduler(tmp_path, builder, spec, on_change="restart")
    scheduler.request(["a"])
    await asyncio.sleep(2)
    (tmp_path / "a" / "src.txt").write_text("v1")  # same bytes, new mtime
    scheduler.request(["a"])
    await scheduler.wait_idle()
    assert [kind for kind, _, _ in builder.events] == ["start", "done"]


@on_virtual_time
async def test_a_new_base_image_rebuilds_its_dependents(tmp_path: Path) -> None:
    spec = _tree(tmp_path, ("base", []), ("app", ["base"]))
    builder = FakeBuilder({"base": 3, "app": 3})
    scheduler = _scheduler(tmp_path, builder, spec)
    assert await run_once(scheduler, None)
    scheduler.scope = None  # as the daemon runs it: changes propagate
    (tmp_path / "base" / "src.txt").write_text("v2")
    scheduler.request(["base"])
    await scheduler.wait_idle()
    names = [name for kind, name, _ in builder.events if kind == "start"]
    assert names == ["base", "app", "base", "app"]
    state = scheduler.reconciler.state.images
    assert state["base"].completed is not None
    assert state["base"].completed.reason == "changed files: base/src.txt"
    assert state["app"].completed is not None
    assert state["app"].completed.reason == "image map base updated"


@on_virtual_time
async def test_a_failed_build_waits_for_a_change(tmp_path: Path) -> None:
    spec = _tree(tmp_path, ("a", []))
    builder = FakeBuilder({"a": 1}, fail={"a"})
    scheduler = _scheduler(tmp_path, builder, spec)
    assert not await run_once(scheduler, None)
    scheduler.request(["a"])
    await scheduler.wait_idle()
    assert [kind for kind, _, _ in builder.events] == ["start", "done"]
    failed = scheduler.reconciler.state.images["a"].completed
    assert failed is not None
    assert failed.error == "a broke"
    (tmp_path / "a" / "src.txt").write_text("v2")
    scheduler.request(["a"])
    await scheduler.wait_idle()
    assert [kind for kind, _, _ in builder.events] == ["start", "done", "start", "done"]
    scheduler.request(["a"], force=True)  # a trigger always builds
    await scheduler.wait_idle()
    assert len(builder.events) == 6


@on_virtual_time
async def test_shutdown_cancels_running_builds_and_says_so(tmp_path: Path) -> None:
    spec = _tree(tmp_path, ("a", []), ("b", []))
    builder = FakeBuilder({"a": 100, "b": 100})
    scheduler = _scheduler(tmp_path, builder, spec)
    scheduler.request(["a", "b"])
    await asyncio.sleep(5)
    assert await scheduler.shutdown(grace=10) == 2
    assert sorted(kind for kind, _, _ in builder.events) == ["cancel", "cancel", "start", "start"]
    for name in "ab":
        done = scheduler.reconciler.state.images[name].completed
        assert done is not None
        assert done.error == "build cancelled: cmdimage-watch was stopped"
    assert scheduler.busy == set()


@on_virtual_time
async def test_an_image_whose_spec_file_went_is_not_built(tmp_path: Path) -> None:
    """`mv app elsewhere` between reading a spec and building it: the build would fail for a
    dir that is not there. It waits instead for the watcher's batch that says where it went."""
    spec = _tree(tmp_path, ("a", []))
    builder = FakeBuilder({"a": 1})
    scheduler = _scheduler(tmp_path, builder, spec)
    spec.rename(tmp_path / "moved.yaml")
    scheduler.request(["a"])
    await scheduler.wait_idle()
    assert builder.events == []
    assert "a" not in scheduler.reconciler.state.images  # no failure, no "building" left
    assert scheduler.reconciler.deferred == {"a": False}  # the daemon asks again if it is back
    scheduler.request(["a"], force=True)  # a trigger meanwhile: kept as one
    await scheduler.wait_idle()
    assert scheduler.reconciler.deferred == {"a": True}
    (tmp_path / "moved.yaml").rename(spec)
    scheduler.request(["a"])
    await scheduler.wait_idle()
    assert [kind for kind, _, _ in builder.events] == ["start", "done"]
    assert scheduler.reconciler.deferred == {}


@on_virtual_time
async def test_a_build_left_building_by_a_crash_is_built_again_and_says_so(
    tmp_path: Path,
) -> None:
    spec = _tree(tmp_path, ("a", []))
    builder = FakeBuilder({"a": 1})
    scheduler = _scheduler(tmp_path, builder, spec)
    assert await run_once(scheduler, None)
    state = scheduler.reconciler.state
    loop = asyncio.get_running_loop()
    started = scheduler.reconciler.clock()
    state.images["a"] = status.building("spec changed", started)  # as a killed daemon left it
    t0 = loop.time()
    assert await run_once(scheduler, None)
    assert _since(builder.events, t0)[-2:] == [("start", "a", 0), ("done", "a", 1)]
    done = state.images["a"].completed
    assert done is not None and done.reason == "the last build did not finish"


@on_virtual_time
async def test_an_image_for_a_cluster_nobody_declared_waits_and_says_for_what(
    tmp_path: Path,
) -> None:
    (tmp_path / "a").mkdir()
    spec = write(tmp_path / "images.yaml", cmdimage("a", dir="a", cluster="staging"))
    builder = FakeBuilder({"a": 1})
    scheduler = _scheduler(tmp_path, builder, spec)
    assert not await run_once(scheduler, None)
    assert builder.events == []
    waiting = scheduler.reconciler.state.images["a"].waiting
    assert waiting is not None
    assert waiting.reason == "waiting for cluster staging: no Cluster object has that name"


class FailsOnBad(FakeBuilder):
    """Fails when the source it finishes with reads "bad"."""

    async def build(self, request: BuildRequest) -> BuildResult:
        result = await super().build(request)
        if (request.image.dir / "src.txt").read_text() == "bad":
            raise BuildError("bad input")
        return result


@on_virtual_time
async def test_going_back_to_inputs_that_failed_shows_that_failure_again(
    tmp_path: Path,
) -> None:
    """bad fails; good starts; bad again mid-build cancels it: the image shows the failure
    of `bad` (not "build cancelled"), and does not retry it."""
    spec = _tree(tmp_path, ("a", []))
    src = tmp_path / "a" / "src.txt"
    src.write_text("bad")
    builder = FailsOnBad({"a": 10})
    scheduler = _scheduler(tmp_path, builder, spec, on_change="restart")
    assert not await run_once(scheduler, None)
    failure = scheduler.reconciler.state.images["a"]
    src.write_text("good")
    scheduler.request(["a"])
    await asyncio.sleep(2)
    src.write_text("bad")
    scheduler.request(["a"])
    await scheduler.wait_idle()
    assert [kind for kind, _, _ in builder.events] == ["start", "done", "start", "cancel"]
    assert scheduler.reconciler.state.images["a"] == failure
