"""The command line: flags to Settings, commands to the modules that do the work.

The only module that prints, exits or configures loguru's sinks.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import typer
from loguru import logger

from cmdimage_watch import project
from cmdimage_watch.builder import Builder
from cmdimage_watch.graph import Index
from cmdimage_watch.scheduler import Scheduler, status_writer
from cmdimage_watch.settings import Settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Rebuild Tilt CmdImage images when their inputs change.",
)

DirArg = typer.Argument(Path(), help="The tree of spec files.", show_default=".")


def _root(path: Path) -> Path:
    if not path.is_dir():
        typer.echo(f"error: {path} is not a folder", err=True)
        raise typer.Exit(2)
    return path.resolve()


def _configure_logging(verbose: int, quiet: bool) -> None:
    logger.remove()
    level = "WARNING" if quiet else ("DEBUG" if verbose else "INFO")
    logger.add(sys.stderr, level=level, format="{time:HH:mm:ss} {level: <7} {message}")


def _print_build_line(name: str, line: str) -> None:
    typer.echo(f"{name} | {line}")


@app.command()
def build(
    root: Path = DirArg,
    names: list[str] = typer.Argument(None, help="Only these images (and what they need)."),
    force: bool = typer.Option(False, "--force", help="Build even when up to date."),
    max_parallel: int = typer.Option(3, "--max-parallel", min=1, help="Builds at once."),
    build_timeout: float = typer.Option(0, "--build-timeout", help="Seconds; 0 is none."),
    verbose: int = typer.Option(0, "-v", "--verbose", count=True),
    quiet: bool = typer.Option(False, "-q", "--quiet"),
) -> None:
    """Build what is out of date once, write the statuses, exit 0 if all succeeded."""
    _configure_logging(verbose, quiet)
    settings = Settings(
        root=_root(root), max_parallel=max_parallel, build_timeout=build_timeout or None
    )
    index = project.load(settings.root)
    unknown = sorted(set(names or ()) - set(index.images))
    if unknown:
        known = ", ".join(sorted(index.images)) or "none"
        typer.echo(f"error: no CmdImage named {', '.join(unknown)} (known: {known})", err=True)
        raise typer.Exit(2)
    ok = asyncio.run(_build(settings, index, names or None, force))
    problems = project.problems(index)
    for problem in problems:
        typer.echo(problem, err=True)
    raise typer.Exit(0 if ok and not problems else 1)


async def _build(settings: Settings, index: Index, names: list[str] | None, force: bool) -> bool:
    state, inputs = project.read_state(index, settings.state_dir)
    builder = Builder(
        settings.log_dir, output=_print_build_line, build_timeout=settings.build_timeout
    )
    scheduler = Scheduler(index, builder, settings, state, inputs)
    scheduler.on_status = status_writer(index, state)
    try:
        return await scheduler.run_once(names, force)
    finally:
        project.write_all(index, state, settings.root)


@app.command()
def validate(root: Path = DirArg) -> None:
    """Check every spec file; print each error as file:line:col: message."""
    _configure_logging(0, True)
    index = project.load(_root(root))
    problems = project.problems(index)
    for problem in problems:
        typer.echo(problem)
    objects = sum(len(f.entries) for f in index.files.values())
    typer.echo(
        f"{len(problems)} error(s) in {objects} object(s) of {len(index.files)} file(s)",
        err=True,
    )
    raise typer.Exit(1 if problems else 0)


def main() -> None:
    app()
