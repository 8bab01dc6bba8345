"""The command line: flags to Settings, commands to the modules that do the work.

The only module that prints, exits or configures loguru's sinks.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import enum
import io
import json
import signal
import sys
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from pydantic import ValidationError

from cmdimage_watch import lifecycle, project, terminal, triggers, views
from cmdimage_watch.builder import Builder
from cmdimage_watch.daemon import Daemon
from cmdimage_watch.graph import Index
from cmdimage_watch.hashes import Hashes
from cmdimage_watch.ledger import Ledger
from cmdimage_watch.lifecycle import LockedError
from cmdimage_watch.progress import PENDING, Progress
from cmdimage_watch.reconcile import Reconciler
from cmdimage_watch.scheduler import Scheduler, run_once
from cmdimage_watch.settings import UI_ADDRESS, Settings, UiAddress
from cmdimage_watch.speccache import SpecCache
from cmdimage_watch.statusfiles import StatusCache
from cmdimage_watch.statuswriter import StatusWriter

if TYPE_CHECKING:
    from rich.table import Table

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Rebuild Tilt CmdImage images when their inputs change.",
)


@app.callback()
def _quiet_by_default() -> None:
    """Commands that report through their own output log only warnings; `build` and `watch`
    set their own level."""
    terminal.configure_logging("WARNING")


class OnChange(enum.StrEnum):
    restart = "restart"
    queue = "queue"


class GraphFormat(enum.StrEnum):
    dot = "dot"
    mermaid = "mermaid"


class LogFormat(enum.StrEnum):
    text = "text"
    json = "json"


FLAG = ""  # a flag takes no value: show none in --help (typer shows <bool>, <int> otherwise)
DirArg = typer.Argument(Path(), help="The tree of spec files.", show_default=".")
STATE_FOLDER = ".cmdimage-watch"
REGISTRY_CACHE_HELP = "Reuse a build of the same inputs from the registry; share each one."


def _dir_and_names(args: list[str] | None, need_names: bool) -> tuple[Path, list[str]]:
    """`[DIR] NAME...`: the first argument is the tree when it looks like a path (`app/`,
    `.`, `../x`), or when it is a folder of spec files and `.` has no image of that name;
    otherwise every argument is an image name in `.`. Where both readings hold, a name
    follows, or `.` was used as a tree before, settle it; only `build WORD` asks."""
    args = list(args or ())
    if args and (_looks_like_path(args[0]) or _is_tree(args, need_names)):
        return Path(args[0]).expanduser(), args[1:]
    if need_names and not args:
        typer.echo("error: name at least one image", err=True)
        raise typer.Exit(2)
    return Path(), args


def _is_tree(args: list[str], need_names: bool) -> bool:
    word = args[0]
    if not _is_dir(Path(word)):
        return False
    index = project.load(Path.cwd())
    folder = Path.cwd() / word
    if not any(folder in path.parents for path in index.files):
        return False  # a folder with no spec files: a name
    if not any(
        e.kind == "CmdImage" and e.name == word for f in index.files.values() for e in f.entries
    ):
        return True  # `build sample-project` from a checkout's root
    if Path(STATE_FOLDER).is_dir() or (need_names and len(args) == 1):
        return False  # `.` is the tree in use; `wait app` needs a name
    if len(args) > 1:
        return True  # `build app web`: the folder, and an image of it
    typer.echo(
        f"error: {word} is both a folder of spec files and an image of the tree .: write "
        f"{word}/ to build the folder as a tree, or `. {word}` to build the image {word}",
        err=True,
    )
    raise typer.Exit(2)


def _looks_like_path(arg: str) -> bool:
    return "/" in arg or arg in (".", "..") or arg.startswith("~")  # names hold no "/"


def _root(path: Path) -> Path:
    if not _is_dir(path):
        what = "does not exist" if not _exists(path) else "is not a folder"
        typer.echo(f"error: {_shown(path)} {what}", err=True)
        raise typer.Exit(2)
    return path.resolve()


def _is_dir(path: Path) -> bool:
    """`Path.is_dir`, False too for a name the system refuses (too long, say)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _exists(path: Path) -> bool:
    try:
        return path.exists() or path.is_symlink()
    except OSError:
        return False


def _shown(path: Path | str, limit: int = 80) -> str:
    """A path or name as an error shows it: a 300-character one is cut, not printed whole."""
    text = str(path)
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(text)} characters)"


def _settings(**values: object) -> Settings:
    """Settings from flags; a value out of range is bad usage (exit 2), named by its flag."""
    try:
        return _state_folder_checked(Settings.model_validate(values))
    except ValidationError as exc:
        error = exc.errors()[0]
        flag = "--" + str(error["loc"][0]).replace("_", "-")
        typer.echo(f"error: {flag}: {error['msg']}", err=True)
        raise typer.Exit(2) from None


def _state_folder_checked(settings: Settings) -> Settings:
    """`settings`, unless something that is no folder holds the state folder's place."""
    path = settings.state_dir
    if _exists(path) and not _is_dir(path):
        typer.echo(
            f"error: {path} is not a folder; cmdimage-watch keeps its state there: move it "
            "away, then run again",
            err=True,
        )
        raise typer.Exit(2)
    return settings


def _level(verbose: int, quiet: bool) -> str:
    if quiet:
        return "WARNING"
    return ("INFO", "DEBUG")[verbose] if verbose < 2 else "TRACE"  # -vv: each save's timeline


@app.command()
def build(
    args: list[str] = typer.Argument(
        None, metavar="[DIR] [NAME]...", help="The tree (default .); only these images."
    ),
    force: bool = typer.Option(False, "--force", help="Build even when up to date.", metavar=FLAG),
    max_parallel: int = typer.Option(3, "--max-parallel", min=1, help="Builds at once."),
    build_timeout: float = typer.Option(0, "--build-timeout", help="Seconds; 0 is none."),
    registry_cache: bool = typer.Option(
        False, "--registry-cache", help=REGISTRY_CACHE_HELP, metavar=FLAG
    ),
    verbose: int = typer.Option(
        0, "-v", "--verbose", count=True, metavar=FLAG, help="More log lines; -vv more still."
    ),
    quiet: bool = typer.Option(False, "-q", "--quiet", metavar=FLAG, help="Warnings only."),
) -> None:
    """Build what is out of date once, write the statuses, exit 0 if all succeeded."""
    root, names = _dir_and_names(args, need_names=False)
    output = terminal.Output(_level(verbose, quiet))
    settings = _settings(
        root=_root(root),
        max_parallel=max_parallel,
        build_timeout=build_timeout or None,
        registry_cache=registry_cache,
    )
    cache = SpecCache(settings.state_dir / "specs.json")
    index = project.load(settings.root, cache)
    _check_names(index, names, root)  # before anything is written into the tree
    cache.save()
    wanted = [n for n in names if n in index.images] if names else None  # invalid: problems
    ok = asyncio.run(_build(settings, index, wanted, force, output))
    problems = project.problems(index)
    for problem in problems:
        typer.echo(problem, err=True)
    raise typer.Exit(0 if ok and not problems else 1)


async def _build(
    settings: Settings,
    index: Index,
    names: list[str] | None,
    force: bool,
    output: terminal.Output,
) -> bool:
    statuses = StatusCache(settings.state_dir / "statuses.json")
    state, inputs = project.read_state(index, settings.state_dir, statuses)
    builder = Builder(
        settings.log_dir, output=output.build_line, build_timeout=settings.build_timeout
    )
    hashes = project.read_hashes(settings.state_dir)
    if names is not None:  # a few images: keep the hashes of the others for the next run
        hashes.seen.update(hashes.entries)
    reconciler = Reconciler(index, builder, settings, Ledger(state, inputs), Hashes(hashes))
    writer = StatusWriter(lambda: index, lambda: state, statuses)
    reconciler.on_status = writer.write
    scheduler = Scheduler(reconciler)
    try:
        return await _until_signalled(scheduler, run_once(scheduler, names, force))
    finally:
        builder.close()
        writer.write_all(settings.root)
        project.write_hashes(settings.state_dir, hashes)
        statuses.save()


async def _until_signalled(scheduler: Scheduler, work: Coroutine[Any, Any, bool]) -> bool:
    """Run `work`; SIGINT or SIGTERM cancel its builds as the daemon does (their process
    groups, `--stop-timeout`; statuses say cmdimage-watch was stopped), then exit 128+signal."""
    loop = asyncio.get_running_loop()
    signals: list[int] = []
    stopped = asyncio.Event()

    def on_signal(signum: int) -> None:
        signals.append(signum)
        stopped.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        cancelled = await scheduler.shutdown(scheduler.settings.stop_timeout + 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        signum = signals[0]
        typer.echo(
            f"stopped by {signal.Signals(signum).name}; cancelled {cancelled} build(s)", err=True
        )
        raise typer.Exit(128 + signum)
    finally:
        waiter.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@app.command()
def validate(root: Path = DirArg) -> None:
    """Check every spec file; print each error as file:line:col: message."""
    terminal.configure_logging("WARNING")
    index = project.load(_root(root))
    problems = project.problems(index)
    for problem in problems:
        typer.echo(problem)
    objects = sum(len(f.entries) for f in index.files.values())
    typer.echo(f"{len(problems)} error(s) in {objects} object(s) of {len(index.files)} file(s)")
    raise typer.Exit(1 if problems else 0)


@app.command()
def watch(
    root: Path = DirArg,
    debounce: float = typer.Option(0.05, help="Seconds of quiet before changes are handled."),
    debounce_max: float = typer.Option(2.0, help="Seconds after which they are handled anyway."),
    max_parallel: int = typer.Option(3, min=1, help="Builds at once."),
    on_change: OnChange = typer.Option(
        "restart", help="A change during a build: cancel and restart it, or queue a rebuild."
    ),
    stop_timeout: float = typer.Option(5.0, help="Seconds from SIGTERM to SIGKILL of a build."),
    build_timeout: float = typer.Option(0, help="Seconds a build may run; 0 is no limit."),
    storm_threshold: int = typer.Option(25, min=1, help="Log batches rebuilding more images."),
    poll: bool = typer.Option(
        False, "--poll", help="Poll instead of inotify (WSL, NFS).", metavar=FLAG
    ),
    registry_cache: bool = typer.Option(
        False, "--registry-cache", help=REGISTRY_CACHE_HELP, metavar=FLAG
    ),
    log_format: LogFormat = typer.Option(
        "text", help="text, or json: one JSON object per event and output line, on stdout."
    ),
    tui: bool = typer.Option(True, help="The live table, when stdout is a terminal.", metavar=FLAG),
    ui: str = typer.Option(
        "",
        "--ui",
        metavar="[HOST:]PORT",
        help=f"Serve the web dashboard and HTTP API; --ui alone is {UI_ADDRESS}.",
        show_default=False,
    ),
    verbose: int = typer.Option(
        0, "-v", "--verbose", count=True, metavar=FLAG, help="More log lines; -vv more still."
    ),
    quiet: bool = typer.Option(False, "-q", "--quiet", metavar=FLAG, help="Warnings only."),
) -> None:
    """Watch the tree and rebuild images as their inputs change (the default command)."""
    address = _ui_address(ui) if ui else None
    output = _output(log_format.value, tui, _level(verbose, quiet))
    settings = _settings(
        root=_root(root),
        debounce=debounce,
        debounce_max=debounce_max,
        max_parallel=max_parallel,
        on_change=on_change.value,
        stop_timeout=stop_timeout,
        build_timeout=build_timeout or None,
        storm_threshold=storm_threshold,
        poll=poll,
        registry_cache=registry_cache,
    )
    builder = Builder(
        settings.log_dir,
        output=output.build_line,
        stop_timeout=settings.stop_timeout,
        build_timeout=settings.build_timeout,
    )
    daemon = Daemon(settings, builder)
    daemon.publisher.on_event = output.event
    try:
        with output.showing(lambda: views.rows(daemon.index, daemon.reconciler.state, daemon.root)):
            asyncio.run(_run(daemon, address, output))
    except LockedError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        builder.close()


async def _run(daemon: Daemon, address: UiAddress | None, output: terminal.Output) -> None:
    """The daemon, with the dashboard on the same loop when `--ui` asks for it."""
    if address is None:
        return await daemon.run()
    from cmdimage_watch import web  # aiohttp loads only for --ui

    events = web.Events()
    output.listeners.append(events.publish)
    dashboard = web.Dashboard(daemon, address, events)
    async with contextlib.AsyncExitStack() as stack:
        try:
            await stack.enter_async_context(dashboard.serving())
        except OSError as exc:  # the port is taken, or the host is not this machine's
            why = exc.strerror or exc
            typer.echo(f"error: --ui {address.host}:{address.port}: {why}", err=True)
            raise typer.Exit(2) from None
        await daemon.run()


def _ui_address(text: str) -> UiAddress:
    try:
        return UiAddress.parse(text)
    except ValueError as exc:
        typer.echo(f"error: --ui: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def trigger(
    args: list[str] = typer.Argument(
        None, metavar="[DIR] NAME...", help="The tree (default .); images to rebuild now."
    ),
) -> None:
    """Ask the running daemon to rebuild these images now, up to date or not."""
    root, names = _dir_and_names(args, need_names=True)
    settings = _state_folder_checked(Settings(root=_root(root)))
    _check_names(project.load(settings.root), names, root)  # a typo first, then the daemon
    if lifecycle.holder(settings.state_dir) is None:
        typer.echo(
            f"error: no cmdimage-watch is watching {settings.root}; start one with "
            f"`cmdimage-watch watch {root}`, or build once with `cmdimage-watch build {root} "
            f"{' '.join(names)} --force`",
            err=True,
        )
        raise typer.Exit(1)
    for name in names:
        triggers.request(settings.state_dir / "triggers", name)


@app.command()
def wait(
    args: list[str] = typer.Argument(
        None, metavar="[DIR] NAME...", help="The tree (default .); images to wait for."
    ),
    timeout: float = typer.Option(0, "--timeout", help="Seconds; 0 waits as long as it takes."),
) -> None:
    """Block until these images are built from their current inputs; exit 0 if all are,
    1 if one failed or the time ran out."""
    root, names = _dir_and_names(args, need_names=True)
    settings = Settings(root=_root(root))
    _check_names(project.load(settings.root), names, root)
    deadline = time.monotonic() + timeout if timeout else None
    progress = Progress(settings)
    while True:
        outcome = progress.check(names)
        pending = [n for n, result in outcome.items() if result == PENDING]
        if not pending:
            break
        if deadline is not None and time.monotonic() > deadline:
            typer.echo(f"error: timed out waiting for {', '.join(pending)}", err=True)
            raise typer.Exit(1)
        time.sleep(0.1)
    for name, error in outcome.items():
        if error:
            typer.echo(f"{name}: {error}", err=True)
    raise typer.Exit(1 if any(outcome.values()) else 0)


def _check_names(index: Index, names: list[str], root: Path) -> None:
    known = project.image_names(index)
    unknown = sorted(set(names) - known)
    if not unknown:
        return
    message = f"error: no CmdImage named {', '.join(map(_shown, unknown))} in {root}"
    close = difflib.get_close_matches(unknown[0], sorted(known), n=3)
    shown = sorted(known)[:10] + (["…"] if len(known) > 10 else [])
    message += f"; did you mean {' or '.join(close)}?" if close else f" (known: {', '.join(shown)})"
    folders = [name for name in unknown if _is_dir(Path(name))]
    if folders:
        message += f"; to name the folder {folders[0]} as the tree, write {folders[0]}/"
    elif len(names) > 1 and names[0] in unknown and root == Path():
        message += f"; nor is there a folder {_shown(names[0])} to be the tree"
    typer.echo(message, err=True)
    raise typer.Exit(2)


@app.command("status")
def show_status(
    root: Path = DirArg,
    as_json: bool = typer.Option(False, "--json", help="A JSON list, for scripts.", metavar=FLAG),
) -> None:
    """The state of every image, from the status files (daemon running or not)."""
    index, found = _rows_on_disk(root)
    now = datetime.now(UTC)
    if as_json:
        typer.echo(json.dumps([r.to_json(now) for r in found], indent=2))
    else:
        _print_table(views.table(found, now))
    # the images of a file that cannot be parsed show their last status: say why it is old
    broken = [f.error for f in index.files.values() if f.error]
    for error in broken:
        typer.echo(error, err=True)
    failed = broken or any(r.state in ("failed", "invalid") for r in found)
    raise typer.Exit(1 if failed else 0)


def _rows_on_disk(root: Path) -> tuple[Index, list[views.Row]]:
    """The tree's images as its spec and status files show them (daemon running or not),
    those of a file that cannot be parsed from their last status, by name."""
    settings = Settings(root=_root(root))
    index = project.load(settings.root)
    statuses = StatusCache(settings.state_dir / "statuses.json")  # read, never written
    state, _ = project.read_state(index, settings.state_dir, statuses)
    return index, views.all_rows(index, state, settings.root, project.kept_statuses(index))


def _output(log_format: str, tui: bool, level: str) -> terminal.Output:
    if log_format == "json":
        return terminal.JsonOutput(level)
    if tui and sys.stdout.isatty():
        from cmdimage_watch.live import LiveOutput  # rich loads only for the live table

        return LiveOutput(level)
    return terminal.Output(level)


def _print_table(table: Table) -> None:
    from rich.console import Console  # only `status` and `list` draw tables

    if sys.stdout.isatty():
        Console().print(table)
        return
    out = io.StringIO()  # a pipe: wide enough for long refs, and no padding at line ends
    Console(file=out, width=200, color_system=None).print(table)
    typer.echo("\n".join(line.rstrip() for line in out.getvalue().splitlines()))


@app.command()
def graph(
    root: Path = DirArg,
    fmt: GraphFormat = typer.Option("dot", "--format", help="dot (Graphviz) or mermaid."),
) -> None:
    """The image dependency graph, with each image's state."""
    index, found = _rows_on_disk(root)
    render = views.mermaid if fmt is GraphFormat.mermaid else views.dot
    typer.echo(render(index, found), nl=False)


@app.command()
def explain(
    args: list[str] = typer.Argument(
        None, metavar="[DIR] IMAGE", help="The tree (default .); the image to explain."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="One JSON object, for scripts.", metavar=FLAG
    ),
) -> None:
    """Why IMAGE built last time, and whether and why it would build now."""
    from cmdimage_watch import explain as explaining  # the reconciler's reading, only here

    root, names = _dir_and_names(args, need_names=True)
    if len(names) != 1:
        typer.echo("error: name one image", err=True)
        raise typer.Exit(2)
    settings = _state_folder_checked(Settings(root=_root(root)))
    index = project.load(settings.root)
    _check_names(index, names, root)
    found = explaining.explain(settings, index, names[0])
    if as_json:
        typer.echo(json.dumps(found.to_json(), indent=2, ensure_ascii=False))
    else:
        typer.echo(explaining.text(found))


@app.command("schema")
def print_schema() -> None:
    """A JSON Schema of the spec files, for editors (yaml-language-server's $schema)."""
    from cmdimage_watch.schema import spec_schema  # pydantic's schema builder: only here

    typer.echo(json.dumps(spec_schema(), indent=2, ensure_ascii=False))


COMMANDS = {
    "watch", "build", "validate", "trigger", "wait", "status", "graph", "explain", "schema",
}  # fmt: skip


def main() -> None:
    """`cmdimage-watch [DIR]` with no command is `cmdimage-watch watch [DIR]`; a word that
    is no folder but close to a command is a typo of it (`buidl`), not a DIR."""
    args = sys.argv[1:]
    if args and args[0] not in COMMANDS and not args[0].startswith("-"):
        typo = difflib.get_close_matches(args[0], sorted(COMMANDS), n=1, cutoff=0.6)
        if typo and not _exists(Path(args[0])):
            typer.echo(
                f"error: No such command '{_shown(args[0])}'. Did you mean '{typo[0]}'?", err=True
            )
            raise SystemExit(2)
    if not args or (args[0] not in COMMANDS and args[0] not in ("--help", "-h")):
        sys.argv[1:1] = ["watch"]
    if sys.argv[1] == "watch":
        sys.argv[1:] = _ui_alone(sys.argv[1:])
    app()


def _ui_alone(args: list[str]) -> list[str]:
    """`--ui` takes a value only when one follows (`--ui 8080`, `--ui 0.0.0.0:8080`); alone,
    or before a folder or a flag, it means the default address (click has no optional value)."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--":
            break
        if arg == "--ui" and not (i + 1 < len(out) and UiAddress.looks_like(out[i + 1])):
            out[i] = f"--ui={UI_ADDRESS}"
    return out
