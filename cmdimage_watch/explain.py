"""`cmdimage-watch explain [DIR] IMAGE`: why an image built last time, and whether (and
why) it would build now.

It reads what every run keeps in the state folder: the last good build's inputs (spec,
image maps' refs, cluster settings, each source's content hash: `inputs/NAME.json`, one per
image, so bounded by the tree), and the status files. Against the inputs the image has
now, it lists what differs; then the files under its source folders that are left out, each
with the rule that leaves it out (a `.dockerignore` line, a FileWatch ignore, or a rule of
the daemon's own), and where it sits in the dependency graph. Pure reading: the engine is
not asked, and nothing is written. `cli explain` prints it, as text or `--json`.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pathspec
from pydantic.alias_generators import to_camel

from cmdimage_watch import gating, project, sources
from cmdimage_watch.builder import Builder
from cmdimage_watch.graph import Image, Index
from cmdimage_watch.hashes import Hashes
from cmdimage_watch.ledger import Ledger
from cmdimage_watch.reconcile import Reconciler
from cmdimage_watch.settings import Settings
from cmdimage_watch.statusfiles import StatusCache

LEFT_OUT_SHOWN = 50  # files and folders listed as left out; the rest are counted


@dataclass
class Change:
    what: str  # `spec.args`, `image map base`, `cluster.defaultRegistry`, `dir`
    before: Any
    after: Any


@dataclass
class LeftOut:
    path: str  # relative to the image's spec folder; a folder ends in "/"
    rule: str  # in words
    file: str = ""  # where the rule is written, if in a file
    line: int = 0


@dataclass
class Explanation:
    name: str
    file: str
    last: dict[str, Any]  # the status shown: state, reason, ref, error, times
    builds_now: bool | None  # None: it cannot build now (it waits, or its spec is invalid)
    now: str  # why it would (or would not) build now
    changes: list[Change] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    left_out: list[LeftOut] = field(default_factory=list)
    left_out_more: int = 0
    needs: list[str] = field(default_factory=list)  # a path from an image needing nothing
    needed_by: list[str] = field(default_factory=list)
    upstream: list[str] = field(default_factory=list)  # what it is built from, that builds

    def to_json(self) -> dict[str, Any]:
        """camelCase keys, as the other JSON of the command line."""
        return {to_camel(k): v for k, v in asdict(self).items()}


def explain(settings: Settings, index: Index, name: str) -> Explanation:
    """`name` of `index` (the tree `settings.root` holds, as `project.load` read it)."""
    statuses = StatusCache(settings.state_dir / "statuses.json")  # read, never written
    state, good = project.read_state(index, settings.state_dir, statuses)
    entry = next(
        e
        for f in index.files.values()
        for e in f.entries
        if e.kind == "CmdImage" and e.name == name
    )
    shown = _shown(entry.loc.path, settings.root)
    value = state.images.get(name)
    last = value.model_dump(mode="json", by_alias=True, exclude_none=True) if value else {}
    image = index.images.get(name)
    if image is None or entry.loc != image.loc:
        problem = index.problem(entry) or "its spec is not in force"
        return Explanation(name, shown, last, None, f"it cannot build: {problem}")
    found = Explanation(name, shown, last, None, "")
    found.needs, found.needed_by = _path_to(index, name), sorted(index.dependents(name))
    left, found.left_out_more = left_out(image, index)
    inside = f"{settings.root}{os.sep}"  # rule files named as the spec file is: in the tree
    found.left_out = [replace(i, file=i.file.removeprefix(inside)) for i in left]
    resolved = gating.resolve(image, index, state)
    if isinstance(resolved, gating.Waiting):
        found.now = f"it waits: {resolved.reason}"
        return found
    reconciler = Reconciler(index, Builder(settings.log_dir), settings, Ledger(state, good))
    reconciler.hashes = Hashes(project.read_hashes(settings.state_dir))
    inputs = asyncio.run(reconciler.inputs_of(name))
    assert inputs is not None  # it does not wait: resolved above
    old = good.get(name)
    if old is not None and inputs.digest() == old.digest():
        found.builds_now = False
        found.now = "no: its inputs are those of its last good build (if its image is still there)"
        found.upstream = [n for n in _needed(index, name) if _stale(reconciler, good, n)]
        if found.upstream:
            found.now += (
                f"; but {', '.join(found.upstream)}, which it is built from, would build: "
                "if an image it needs comes out new, so does this one"
            )
        return found
    found.builds_now = True
    if state.failed.get(name) == inputs.digest():
        found.now = (
            "these inputs failed last time: the daemon that saw it fail waits for a change "
            "or a `trigger`; a new start builds them again"
        )
    elif old is None:
        found.now = "yes: " + ("never built" if name not in state.digests else "no inputs kept")
    else:
        found.now = "yes: " + (sources.change_reason(old, inputs) or "inputs changed")
    if old is not None:
        found.changes = _changes(old, inputs)
        for path in sorted(set(old.sources) | set(inputs.sources)):
            before, after = old.sources.get(path), inputs.sources.get(path)
            if before is None:
                found.added.append(path)
            elif after is None:
                found.removed.append(path)
            elif before != after:
                found.changed.append(path)
    return found


def _needed(index: Index, name: str) -> list[str]:
    """Every image `name` is built from, nearest first."""
    found: list[str] = []
    todo = list(index.deps(name))
    while todo:
        dep = todo.pop(0)
        if dep not in found and dep != name:
            found.append(dep)
            todo.extend(index.deps(dep))
    return found


def _stale(reconciler: Reconciler, good: dict[str, sources.Inputs], name: str) -> bool:
    inputs = asyncio.run(reconciler.inputs_of(name))
    old = good.get(name)
    return inputs is not None and (old is None or inputs.digest() != old.digest())


def _changes(old: sources.Inputs, new: sources.Inputs) -> list[Change]:
    out = [
        Change(f"spec.{key}", old.spec.get(key), new.spec.get(key))
        for key in sorted(old.spec.keys() | new.spec.keys())
        if old.spec.get(key) != new.spec.get(key)
    ]
    if old.dir != new.dir:
        out.append(Change("dir", old.dir, new.dir))
    before, after = dict(old.image_maps), dict(new.image_maps)
    for map_name in sorted(before.keys() | after.keys()):
        if before.get(map_name) != after.get(map_name):
            out.append(Change(f"image map {map_name}", before.get(map_name), after.get(map_name)))
    old_cluster, new_cluster = old.cluster or {}, new.cluster or {}
    for key in sorted(old_cluster.keys() | new_cluster.keys()):
        if old_cluster.get(key) != new_cluster.get(key):
            out.append(Change(f"cluster.{key}", old_cluster.get(key), new_cluster.get(key)))
    return out


def _path_to(index: Index, name: str) -> list[str]:
    """`base → tool → name`: the first dependency of each, up to one that needs none."""
    chain, seen = [name], {name}
    while True:
        deps = [d for d in index.deps(chain[0]) if d not in seen]
        if not deps:
            return chain
        chain.insert(0, deps[0])
        seen.add(deps[0])


# --- what is left out, and by which rule ----------------------------------------------


@dataclass(frozen=True)
class _Rule:
    base: Path  # patterns are relative to it
    pattern: str  # as written
    spec: pathspec.PathSpec[Any]  # the pattern, without its "!"
    negated: bool
    file: str
    line: int


def left_out(image: Image, index: Index) -> tuple[list[LeftOut], int]:
    """The files and folders under the image's source folders that are not its sources,
    each with its rule: at most LEFT_OUT_SHOWN, and how many more there are."""
    base = image.loc.path.parent
    kept = set(sources.source_texts(image, index))
    rules = _rules(image, index)
    found: list[LeftOut] = []
    for root in sources.roots(image, index):
        if root.path.is_file():
            continue
        for folder, dirs, files in os.walk(root.path):
            for d in sorted(dirs):
                path = Path(folder, d)
                why = _folder_rule(path, root, rules)
                if why is not None:
                    found.append(_left(path, base, why, folder=True))
            dirs[:] = sorted(
                d
                for d in dirs
                if sources.enterable(Path(folder), d) and not root.ignored(Path(folder, d), True)
            )
            for name in sorted(files):
                path = Path(folder, name)
                if str(path) not in kept:
                    found.append(_left(path, base, _file_rule(path, image, index, rules)))
    return found[:LEFT_OUT_SHOWN], max(0, len(found) - LEFT_OUT_SHOWN)


def _left(path: Path, base: Path, why: LeftOut, folder: bool = False) -> LeftOut:
    rel = os.path.relpath(path, base) + ("/" if folder else "")
    return LeftOut(rel, why.rule, why.file, why.line)


def _folder_rule(path: Path, root: sources.Root, rules: list[list[_Rule]]) -> LeftOut | None:
    if sources.is_hidden_folder(path.name):
        return LeftOut("", "hidden folders are never sources (nor watched)")
    if root.ignored(path, True):
        return _matching(path, rules, folder=True)
    return None


def _file_rule(path: Path, image: Image, index: Index, rules: list[list[_Rule]]) -> LeftOut:
    if sources.is_never_source(path.name):
        return LeftOut("", "status files and editor temporaries are never sources")
    if path in index.files:
        return LeftOut("", "spec files are never sources")
    if image.outputs_ref_to == path:
        return LeftOut("", "the image's own outputsImageRefTo file")
    if path in sources.own_output():
        return LeftOut("", "this command's own output")
    return _matching(path, rules)


def _matching(path: Path, groups: list[list[_Rule]], folder: bool = False) -> LeftOut:
    """The rule that decides: in each group (a .dockerignore, one FileWatch ignore), the
    last pattern that matches, as docker reads them; the first group that leaves it out."""
    for rules in groups:
        last: _Rule | None = None
        for rule in rules:
            if rule.base != path and rule.base not in path.parents:
                continue
            rel = path.relative_to(rule.base).as_posix() + ("/" if folder else "")
            if rule.spec.match_file(rel):
                last = rule
        if last is not None and not last.negated:
            return LeftOut("", f"matches {last.pattern}", last.file, last.line)
    return LeftOut("", "left out by the ignore rules of a folder above it")


def _rules(image: Image, index: Index) -> list[list[_Rule]]:
    """The ignore patterns of the image's sources, with where each is written: one group
    for its .dockerignore, or one per ignore entry of its FileWatch (each decides alone)."""
    watch = index.file_watches.get(f"image:{image.publishes}")
    if watch is None:
        ignore = image.dir / ".dockerignore"
        try:
            lines = ignore.read_text("utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return []
        written = [(n, line) for n, line in enumerate(lines, 1)]
        return [_compiled(image.dir, written, str(ignore))]
    loc = index.file_watch_locs[watch.metadata.name]
    entries = index.files[loc.path].entries if loc.path in index.files else []
    marks = next((dict((m[0], m[1]) for m in e.marks) for e in entries if e.loc == loc), {})
    groups = []
    for i, item in enumerate(watch.spec.ignores):
        at = f"spec.ignores[{i}]"
        written = [
            (marks.get(f"{at}.patterns[{j}]", marks.get(at, loc.line)), pattern)
            for j, pattern in enumerate(item.patterns)
        ]
        where = f"{loc.path} (FileWatch {watch.metadata.name})"
        base = Path(os.path.normpath(loc.path.parent / item.base_path))
        groups.append(_compiled(base, written, where))
    return groups


def _compiled(base: Path, written: list[tuple[int, str]], file: str) -> list[_Rule]:
    out = []
    for line, text in written:
        for pattern in sources.dockerignore_lines([text]):
            negated = pattern.startswith("!")
            spec = pathspec.PathSpec.from_lines("gitignore", [pattern.removeprefix("!")])
            out.append(_Rule(base, text.strip(), spec, negated, file, line))
    return out


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if root in path.parents else str(path)


def text(found: Explanation) -> str:
    """The explanation for people."""
    lines = [f"{found.name} ({found.file})"]
    last = found.last
    done = last.get("completed") or {}
    if last.get("building"):
        lines.append(f"  building now: {last['building'].get('reason', '')}")
    if done:
        state = "failed" if done.get("error") else "ok"
        lines.append(f"  last build: {state}, because {done.get('reason') or '?'}")
        lines.append(f"    finished {done.get('finishedAt', '?')}; ref {last.get('ref') or '-'}")
        if done.get("error"):
            lines.append(f"    error: {done['error'].splitlines()[0]}")
    elif not last.get("building"):
        lines.append("  last build: none recorded")
    lines.append(f"  now: {found.now}")
    for change in found.changes:
        lines.append(f"    {change.what}: {change.before!r} -> {change.after!r}")
    for label, paths in (("added", found.added), ("removed", found.removed)):
        if paths:
            lines.append(f"    files {label}: {', '.join(paths)}")
    if found.changed:
        lines.append(f"    files changed: {', '.join(found.changed)}")
    if found.left_out:
        lines.append(f"  left out of its sources ({len(found.left_out) + found.left_out_more}):")
        for item in found.left_out:
            where = f" ({item.file}:{item.line})" if item.file else ""
            lines.append(f"    {item.path}: {item.rule}{where}")
        if found.left_out_more:
            lines.append(f"    … and {found.left_out_more} more")
    if found.needs:
        lines.append(f"  dependency path: {' -> '.join(found.needs)}")
    lines.append(f"  needed by: {', '.join(found.needed_by) or 'nothing'}")
    return "\n".join(lines)
