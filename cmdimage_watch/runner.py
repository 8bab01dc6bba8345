"""The build command as a process: its own process group, its log, its end (SPEC §3 step 5).

`Runner.run` rotates `<name>.log` to `<name>.prev.log`, starts `args` without a shell in
`dir`, pumps every output line to the log and to `output`, and stops the whole group
(SIGTERM, SIGKILL after `stop_timeout`) on `--build-timeout` or cancellation. `on_spawn`
tells `lifecycle.BuildRecords` of the group. Fed by `builder`; knows no Docker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cmdimage_watch import timeline
from cmdimage_watch.buildenv import BuildError, display_command, quoted, shown
from cmdimage_watch.graph import Image
from cmdimage_watch.settings import state_file_name

Output = Callable[[str, str], None]  # (image name, line of build output)
OnSpawn = Callable[[str, int | None], None]  # (image name, process group, None once over)


@dataclass(frozen=True)
class Finished:
    """A command that ran to its end: its exit code (negative: the signal) and its log."""

    returncode: int
    log: Path
    display: str

    def error(self) -> str:
        """The `completed.error` of a non-zero exit."""
        why = exit_text(self.returncode)
        return f"Custom build {quoted(shown(self.display))} failed: {why}; see the log {self.log}"


@dataclass
class Runner:
    log_dir: Path
    output: Output
    stop_timeout: float
    build_timeout: float | None
    on_spawn: OnSpawn

    async def run(self, image: Image, env: dict[str, str]) -> Finished:
        """Run `image`'s command to its end; a timeout or a command that cannot start is a
        BuildError, a cancellation ends the process group first."""
        log_path = self._rotate_log(image.name)
        display = display_command(image.spec.args)
        with log_path.open("w", encoding="utf-8") as log:
            proc = await self._spawn(image, env, display, log)
            timeline.mark("spawned", image.name)
            self.on_spawn(image.name, proc.pid)
            try:
                rc = await asyncio.wait_for(self._pump(image.name, proc, log), self.build_timeout)
            except TimeoutError:
                await self._stop(proc)
                raise BuildError(
                    f"Custom build {quoted(shown(display))} timed out after "
                    f"{self.build_timeout:g} s (--build-timeout); see the log {log_path}"
                ) from None
            except BaseException:  # cancelled, or the log's disk is full: end the build too
                await self._stop(proc)
                raise
            finally:
                self.on_spawn(image.name, None)
        return Finished(rc, log_path, display)

    async def _spawn(
        self, image: Image, env: dict[str, str], display: str, log: IO[str]
    ) -> Process:
        if not image.dir.is_dir():
            raise BuildError(
                f"Custom build {quoted(shown(display))} cannot run: its dir {image.dir} does not "
                f"exist (spec.dir of CmdImage {image.name} in {image.loc})"
            )
        log.write(f"$ {display}\n")
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _Protocol(STREAM_LIMIT, loop),
                *image.spec.args,
                cwd=image.dir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise BuildError(_cannot_start(image, display, exc)) from None
        return Process(transport, protocol, loop)

    async def _pump(self, name: str, proc: Process, log: IO[str]) -> int:
        """The command's output until the command itself exits. A process it left in its
        group (`server &`) that still holds the output does not keep the build open: once
        the command is gone and LINGER_S passed, what is left of its group is ended."""
        lines = asyncio.ensure_future(self._lines(name, proc, log))
        exited = asyncio.ensure_future(proc.exited())
        try:
            await asyncio.wait({lines, exited}, return_when=asyncio.FIRST_COMPLETED)
            if not lines.done():  # the command is gone; its last output may be on its way
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(lines), LINGER_S)
            if not lines.done():
                note = "cmdimage-watch: the command exited; ending what it left running"
                log.write(note + "\n")
                self.output(name, note)
                await self._stop(proc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(lines), 5)
            return await exited
        finally:
            for task in (lines, exited):
                task.cancel()

    async def _lines(self, name: str, proc: Process, log: IO[str]) -> None:
        assert proc.stdout is not None
        while raw := await read_line(proc.stdout):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            log.write(line + "\n")
            log.flush()
            self.output(name, line)

    async def _stop(self, proc: Process) -> None:
        """SIGTERM to the build's process group, SIGKILL after `stop_timeout`."""
        kill_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proc.wait()), self.stop_timeout)
        kill_group(proc.pid, signal.SIGKILL)  # children left in the group go too
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 5)

    def _rotate_log(self, name: str) -> Path:
        path = self.log_dir / state_file_name(name, ".log")
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            if path.exists():
                path.replace(self.log_dir / state_file_name(name, ".prev.log"))
            path.touch()
        except OSError as exc:
            raise BuildError(
                f"cannot write the build log {path}: {exc.strerror or exc}; free some disk space "
                f"or make {self.log_dir} a writable folder, then save again"
            ) from None
        return path


def _cannot_start(image: Image, display: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        why = "was not found on PATH or in"
    elif isinstance(exc, PermissionError):
        why = "is not executable, run from"
    else:  # ENOEXEC: a script without a #! line, or a foreign binary
        why = f"could not be started ({exc.strerror}; does it start with #!?), run from"
    return (
        f"Custom build {quoted(shown(display))} failed: the program {image.spec.args[0]!r} {why} "
        f"{image.dir}; fix spec.args of CmdImage {image.name} in {image.loc}"
    )


LINGER_S = 0.5  # after the command exits, how long its last output may take to arrive
STREAM_LIMIT = 2**16  # asyncio's own default for a process's output stream


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's protocol for a process with output streams, plus an event set the moment
    the process exits."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit, loop)
        self.exit = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exit.set()


class Process(asyncio.subprocess.Process):
    """A build command: `create_subprocess_exec`'s process, plus `exited`."""

    _protocol: _Protocol

    async def exited(self) -> int:
        """The exit status as soon as the command exits: `wait()` (Python 3.11) returns
        only once every holder of its output pipe has closed it."""
        await self._protocol.exit.wait()
        assert self.returncode is not None
        return self.returncode


async def read_line(stream: asyncio.StreamReader) -> bytes:
    """The next line, b"" at the end; a line longer than the stream's buffer limit comes in
    pieces (iterating the stream raises ValueError on it, and the build would escape)."""
    try:
        return await stream.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial  # the last line had no newline
    except asyncio.LimitOverrunError as exc:
        return await stream.readexactly(exc.consumed)


def kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def exit_text(rc: int) -> str:
    if rc < 0:  # Go's (and so Tilt's) wording: "signal: killed", "signal: terminated"
        return f"signal: {(signal.strsignal(-rc) or f'signal {-rc}').lower()}"
    return f"exit status {rc}"
