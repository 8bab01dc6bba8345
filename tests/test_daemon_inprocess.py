"""A real `Daemon`, in this process, fed a scripted change stream (the watchfiles way).

Only the watcher is faked (`tests.test_watchset.Scripted`); specs, sources, status files
and build commands are real. The images use `outputMode: remote`, so no engine is needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from cmdimage_watch.builder import Builder
from cmdimage_watch.daemon import Daemon
from cmdimage_watch.settings import Settings
from tests.helpers import cmdimage, run_async, write
from tests.helpers.polling import until
from tests.test_watchset import Scripted


class Scripts:
    """The watchers a daemon started, in order."""

    def __init__(self) -> None:
        self.started: list[Scripted] = []

    def __call__(self, dirs: set[Path], poll: bool) -> Scripted:
        self.started.append(Scripted(dirs, poll))
        return self.started[-1]


def tree(root: Path) -> tuple[Path, Path]:
    (root / "app").mkdir(parents=True)
    src = root / "app" / "src.txt"
    src.write_text("v1")
    script = "cat src.txt >> ../built.txt; echo >> ../built.txt"
    spec = write(
        root / "app" / "app.yaml",
        cmdimage("app", args=["sh", "-c", script], outputMode="remote"),
    )
    return spec, src


def test_a_scripted_save_rebuilds_the_image_it_touches(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    _, src = tree(root)
    settings = Settings(root=root)
    scripts = Scripts()
    daemon = Daemon(settings, Builder(settings.log_dir), watchers=scripts)

    def done(reason: str) -> Callable[[], bool]:
        def check() -> bool:
            value = daemon.state.images.get("app")
            return bool(value and value.completed and value.completed.reason == reason)

        return check

    async def scenario() -> None:
        running = asyncio.create_task(daemon.run())
        try:
            await until(lambda: bool(scripts.started), "the first watcher")
            (watcher,) = scripts.started
            assert root in watcher.dirs and not watcher.poll
            watcher.put()  # READY: the work starts
            await until(done("initial build"), "the initial build")
            src.write_text("v2")
            watcher.put(str(src))
            await until(done("changed files: src.txt"), "the rebuild")
        finally:
            daemon.stop.set()
            await running
        assert watcher.closed

    run_async(scenario())
    assert (root / "built.txt").read_text() == "v1\nv2\n"
    status = (root / "app" / "app.status.yaml").read_text()
    assert "reason: 'changed files: src.txt'" in status
