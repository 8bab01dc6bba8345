"""Trigger files on virtual time: a forced build, and the file gone only once it is over."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from cmdimage_watch.triggers import Triggers
from tests.helpers import on_virtual_time
from tests.test_scheduler import FakeBuilder, _scheduler, _tree


def _triggers(
    tmp_path: Path, builder: FakeBuilder
) -> tuple[Triggers, Path, set[asyncio.Task[None]]]:
    spec = _tree(tmp_path, ("a", []))
    folder = tmp_path / ".cmdimage-watch" / "triggers"
    folder.mkdir(parents=True)
    tasks: set[asyncio.Task[None]] = set()

    def spawn(work: Coroutine[Any, Any, None]) -> None:
        tasks.add(asyncio.create_task(work))

    return Triggers(folder, _scheduler(tmp_path, builder, spec), spawn), folder, tasks


@on_virtual_time
async def test_a_trigger_forces_a_build_and_its_file_goes_when_the_build_is_over(
    tmp_path: Path,
) -> None:
    builder = FakeBuilder({"a": 5})
    triggers, folder, tasks = _triggers(tmp_path, builder)
    (folder / "a").write_text("1\n")
    (folder / ".a.tmp").write_text("1\n")  # `trigger`'s temp file, not yet renamed
    triggers.handle(folder.iterdir())
    await asyncio.sleep(1)
    assert (folder / "a").exists()  # `wait` sees a build still to come
    triggers.handle([folder / "a"])  # the same trigger reported again: nothing new
    await asyncio.gather(*tasks)
    assert not (folder / "a").exists()
    assert [kind for kind, _, _ in builder.events] == ["start", "done"]
    done = triggers.reconciler.state.images["a"].completed
    assert done is not None and done.reason == "manual trigger"


@on_virtual_time
async def test_a_trigger_written_again_during_its_build_keeps_its_file(tmp_path: Path) -> None:
    builder = FakeBuilder({"a": 5})
    triggers, folder, tasks = _triggers(tmp_path, builder)
    (folder / "a").write_text("1\n")
    triggers.handle([folder / "a"])
    await asyncio.sleep(1)
    (folder / "a").write_text("2\n")  # a second `trigger a`: its own build, its own clear
    triggers.handle([folder / "a"])
    while tasks:
        await asyncio.gather(*list(tasks))
        tasks.difference_update({t for t in tasks if t.done()})
    assert not (folder / "a").exists()
    assert [kind for kind, _, _ in builder.events].count("start") == 2
