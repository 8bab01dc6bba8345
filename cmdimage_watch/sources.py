"""Source dependency sets, ignore rules, content hashes and the inputs digest.

An image's sources are its FileWatch `image:<map>` paths, else its build `dir` minus its
`.dockerignore`. Ignored folders are pruned before they are walked. Files are hashed by
content, lazily: a file is read again only when its size or mtime changed. `scheduler`
compares the resulting digest with the one of the last successful build.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pathspec
import watchfiles
from loguru import logger

from cmdimage_watch import models
from cmdimage_watch.graph import Image, Index
from cmdimage_watch.regularfiles import NotRegularFile, open_regular, read_regular

EDITOR_TEMPORARIES = ("*.sw?", "*~", "4913", ".#*", "#*#", "*___jb_tmp___", "*___jb_old___")


STATUS_FILES = ("*.status.yaml", "*.status.yml", ".*.status.y*ml.*.tmp")  # ours, and in flight


# one regex for all the patterns: asked of every file of every walk
_NEVER_SOURCE = re.compile("|".join(map(fnmatch.translate, (*STATUS_FILES, *EDITOR_TEMPORARIES))))


HASHES_VERSION = 1  # of HashCache.to_json; a new layout never trusts an old one
RACY_NS = 2_000_000_000  # an mtime this close to its hashing may hide a later save


def is_never_source(name: str) -> bool:
    """Status files (ours, also while being written) and editor temporaries are nobody's
    source. Hidden *files* are (`.env`, `.babelrc` go into a build's context)."""
    return _NEVER_SOURCE.match(name) is not None


@functools.cache
def own_output() -> frozenset[Path]:
    """The regular files this process writes its standard output and error to
    (`watch . > daemon.log`, `nohup.out`): never a source, or every log line would be a
    change and cancel the build that wrote it."""
    found = set()
    for fd in (1, 2):
        try:
            target = Path(f"/proc/self/fd/{fd}").readlink()
            if target.is_absolute() and target.is_file():
                found.add(target)
        except OSError:
            continue
    return frozenset(found)


SPEC_SUFFIXES = (".yaml", ".yml")  # what a spec file's name ends with


def is_hidden_folder(name: str) -> bool:
    """`.git`, `.cmdimage-watch`, ...: never watched, never walked."""
    return name.startswith(".")


def dockerignore_lines(lines: Iterable[str]) -> list[str]:
    """.dockerignore patterns as root-anchored gitignore patterns (docker anchors them all)."""
    out = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:].strip() if negate else line
        pattern = os.path.normpath(pattern).lstrip("/")
        if pattern in ("", "."):
            continue
        out.append(("!" if negate else "") + "/" + pattern)
    return out


Ignore = tuple[Path, pathspec.PathSpec[Any]]  # patterns relative to their base folder


@dataclass(frozen=True)
class Root:
    """One folder (or file) to watch and the ignore rules that apply under it."""

    path: Path
    ignores: tuple[Ignore, ...] = ()

    def ignored(self, path: Path | str, is_dir: bool) -> bool:
        text = str(path)
        for base, spec in self.ignores:
            prefix = str(base).rstrip("/") + "/"
            if not spec.patterns or not text.startswith(prefix):
                continue  # string tests: this runs for every file of every walk
            if is_dir and any(p.include is False for p in spec.patterns):
                continue  # `!docs/README.md` can bring back a file of an ignored folder
            rel = text[len(prefix) :]
            if spec.match_file(rel + "/" if is_dir else rel):
                return True
        return False

    def covers(self, path: Path) -> bool:
        """Whether a change at `path` can change this root's sources."""
        if path != self.path and self.path not in path.parents:
            return False
        *folders, name = path.relative_to(self.path).parts or ("",)
        if any(is_hidden_folder(f) for f in folders) or is_never_source(name):
            return False
        return not self.ignored(path, path.is_dir())


def roots(image: Image, index: Index) -> list[Root]:
    watch = index.file_watches.get(f"image:{image.publishes}")
    if watch is None:
        return [Root(image.dir, ((image.dir, _dockerignore(image.dir)),))]
    return file_watch_roots(watch, index.file_watch_locs[watch.metadata.name].path.parent)


def file_watch_roots(watch: models.FileWatch, folder: Path) -> list[Root]:
    ignores = tuple(
        (
            _norm(folder / i.base_path),
            pathspec.PathSpec.from_lines("gitignore", dockerignore_lines(i.patterns)),
        )
        for i in watch.spec.ignores
    )
    return [Root(_norm(folder / watched), ignores) for watched in watch.spec.watched_paths]


def _norm(path: Path) -> Path:
    return Path(os.path.normpath(path))


def dockerignores(folder: Path, path: Path) -> bool:
    """Whether `docker build` in `folder` leaves `path` out of its context."""
    rel = path.relative_to(folder).as_posix()
    return bool(_dockerignore(folder).match_file(rel + "/"))


def _dockerignore(folder: Path) -> pathspec.PathSpec[Any]:
    try:
        lines = read_regular(folder / ".dockerignore").decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        lines = []
    return pathspec.PathSpec.from_lines("gitignore", dockerignore_lines(lines))


PSEUDO_FILESYSTEMS = frozenset(
    [
        "proc",
        "sysfs",
        "devtmpfs",
        "devpts",
        "cgroup",
        "cgroup2",
        "debugfs",
        "tracefs",
        "securityfs",
        "pstore",
        "bpf",
        "configfs",
        "fusectl",
        "mqueue",
        "hugetlbfs",
        "binfmt_misc",
        "autofs",
        "efivarfs",
    ]
)


@functools.cache
def pseudo_mounts() -> frozenset[Path]:
    """Where the kernel's own filesystems are mounted (/proc, /sys, ...): never sources, never
    watched. Their files can block a read (/proc/kmsg) or never end (/proc/kcore), and a
    `dir: /` or `dir: ../../..` would reach them."""
    try:
        lines = Path("/proc/self/mounts").read_text("utf-8").splitlines()
    except OSError:
        return frozenset(Path(p) for p in ("/proc", "/sys", "/dev"))
    return frozenset(
        Path(fields[1].replace("\\040", " "))
        for fields in (line.split() for line in lines)
        if len(fields) > 2 and fields[2] in PSEUDO_FILESYSTEMS
    )


def enterable(folder: Path, name: str) -> bool:
    """Whether a walk goes into `folder/name`: not hidden, not a pseudo filesystem."""
    return not is_hidden_folder(name) and folder / name not in pseudo_mounts()


def walk(root: Root, skip: Callable[[str, str], bool]) -> Iterator[str]:
    """Every source file under `root`, as text (a start walks 20,000 of them: no `Path`
    each), pruning ignored and hidden folders before entering; `skip(path, name)` says
    which files are not sources after all."""
    if root.path.is_file():
        top = str(root.path)
        if not skip(top, root.path.name) and not root.ignored(top, False):
            yield top
        return
    if root.path in pseudo_mounts():
        return
    mounts = {str(m) for m in pseudo_mounts()}
    join = os.path.join
    for folder, dirs, files in os.walk(root.path):
        dirs[:] = sorted(
            d
            for d in dirs
            if not is_hidden_folder(d)
            and join(folder, d) not in mounts
            and not root.ignored(join(folder, d), True)
        )
        for name in sorted(files):
            path = join(folder, name)
            if not is_never_source(name) and not skip(path, name) and not root.ignored(path, False):
                yield path


def source_texts(image: Image, index: Index) -> list[str]:
    """The source files of `image`, as text, sorted."""
    own = {str(p) for p in own_output()}
    if image.outputs_ref_to:
        own.add(str(image.outputs_ref_to))
    specs = index.files

    def skip(path: str, name: str) -> bool:  # spec files are never sources, nor our log
        return path in own or (name.endswith(SPEC_SUFFIXES) and Path(path) in specs)

    found: set[str] = set()
    for root in roots(image, index):
        found.update(walk(root, skip))
    return sorted(found)


@dataclass
class HashCache:
    """Content hashes keyed by path, reused while size and mtime stay the same. Kept in the
    state folder between runs (`to_json`), so a start reads only the files that changed
    while nothing watched them.

    A file whose mtime was within RACY_NS of its hashing may be saved again in the same
    tick of its clock with the same size (git's "racily clean"). Such a hash serves until
    a batch names the file (`changed`: a save always brings an event), and is never kept."""

    entries: dict[str, tuple[int, int, str]] = field(default_factory=dict)
    reads: int = 0
    seen: set[str] = field(default_factory=set)  # asked for in this run: all that is kept
    racy: set[str] = field(default_factory=set)
    skipped: set[str] = field(default_factory=set)  # not regular files, warned about once
    saved: dict[str, tuple[int, int, str]] | None = None  # what the state folder holds

    def hash(self, path: Path | str) -> str | None:
        key, now = str(path), time.time_ns()
        try:
            st = os.stat(key)  # noqa: PTH116 (a start stats 20,000: no Path each)
        except OSError:
            self.entries.pop(key, None)  # gone: the cache holds only files that exist
            return None
        self.seen.add(key)
        cached = self.entries.get(key)
        if cached and cached[:2] == (st.st_size, st.st_mtime_ns):
            return cached[2]
        digest = self._read(Path(key))
        if digest is not None:
            self.entries[key] = (st.st_size, st.st_mtime_ns, digest)
            if st.st_mtime_ns >= now - RACY_NS:
                self.racy.add(key)
            else:
                self.racy.discard(key)
        return digest

    def changed(self, paths: Iterable[Path]) -> None:
        """A batch names these paths: a racy hash of one of them is read again."""
        for path in paths:
            key = str(path)
            if key in self.racy:
                self.racy.discard(key)
                self.entries.pop(key, None)

    def kept(self) -> dict[str, tuple[int, int, str]]:
        """What the state folder should hold: what this run saw, but for racy hashes."""
        entries, racy = dict(self.entries), set(self.racy)  # C-level copies: threads add
        return {k: v for k in list(self.seen) if k not in racy and (v := entries.get(k))}

    def to_json(self, kept: dict[str, tuple[int, int, str]] | None = None) -> str:
        found = self.kept() if kept is None else kept
        return json.dumps({"version": HASHES_VERSION, "entries": found}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> HashCache:
        """The cache `to_json` wrote; empty when the text is not that (a crash, an edit)."""
        try:
            data = json.loads(text)
            if data["version"] != HASHES_VERSION:
                return cls()
            entries = {k: (int(v[0]), int(v[1]), str(v[2])) for k, v in data["entries"].items()}
            return cls(entries, saved=dict(entries))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return cls()

    def _read(self, path: Path) -> str | None:
        self.reads += 1
        h = hashlib.blake2b(digest_size=16)
        try:
            with open_regular(path) as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        except NotRegularFile as exc:
            if str(path) not in self.skipped:  # once: it is looked at on every change
                self.skipped.add(str(path))
                logger.warning("{}: not a source", exc)
            return None
        except OSError:
            return None
        return h.hexdigest()


@dataclass(frozen=True)
class Inputs:
    """Everything a build's result depends on (SPEC §4); its digest decides whether to build."""

    spec: dict[str, Any]
    dir: str
    image_maps: list[tuple[str, str]]  # (ImageMap name, image it resolves to)
    cluster: dict[str, Any] | None
    sources: dict[str, str]  # path relative to the spec's folder -> content hash

    @classmethod
    def of(
        cls,
        image: Image,
        maps: list[tuple[str, str]],
        cluster: models.Cluster | None,
        sources: dict[str, str],
    ) -> Inputs:
        spec = image.spec.model_dump(mode="json")
        cluster_spec = cluster.spec.model_dump(mode="json") if cluster else None
        folder = os.path.relpath(image.dir, image.loc.path.parent)  # the same on every machine
        return cls(spec, folder, maps, cluster_spec, sources)

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in fields(self)}  # asdict would deep-copy
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Inputs | None:
        try:
            data = json.loads(text)
            data["image_maps"] = [tuple(pair) for pair in data["image_maps"]]
            return cls(**data)
        except (ValueError, TypeError, KeyError):
            return None

    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.to_json().encode()).hexdigest()


def change_reason(old: Inputs | None, new: Inputs) -> str:
    """Why `new` needs a build after `old` was built, in words; "" when nothing changed."""
    if old is None:
        return "initial build"
    if Path(old.dir).is_absolute():  # recorded before the digest was made machine-independent
        return "inputs recorded by an older cmdimage-watch"
    if (old.spec, old.dir) != (new.spec, new.dir):
        return "spec changed"
    if old.cluster != new.cluster:
        return f"cluster {new.spec.get('cluster') or 'default'} changed"
    if old.image_maps != new.image_maps:
        changed = [n for (n, i) in new.image_maps if (n, i) not in old.image_maps]
        return f"image map {', '.join(changed) or 'list'} updated"
    return describe_files(changed_files(old, new))


def changed_files(old: Inputs, new: Inputs) -> list[str]:
    """The sources (relative to the spec's folder) added, removed or changed from `old`."""
    return sorted(
        p
        for p in old.sources.keys() | new.sources.keys()
        if old.sources.get(p) != new.sources.get(p)
    )


def only_files_differ(old: Inputs, new: Inputs) -> bool:
    """Whether nothing but source files tells `old` and `new` apart."""
    return (old.spec, old.dir, old.cluster, old.image_maps) == (
        new.spec,
        new.dir,
        new.cluster,
        new.image_maps,
    )


def describe_files(paths: list[str]) -> str:
    if not paths:
        return ""
    more = f" (+{len(paths) - 3} more)" if len(paths) > 3 else ""
    return f"changed files: {', '.join(paths[:3])}{more}"


def ignore_rule(image: Image, index: Index, rel: str) -> str:
    """What to write so that `rel` (relative to the image's spec folder) stops being one of
    its sources: a `.dockerignore` line, or a FileWatch ignore when one names the sources."""
    path = _norm(image.loc.path.parent / rel)
    watch = index.file_watches.get(f"image:{image.publishes}")
    if watch is not None:
        where = index.file_watch_locs[watch.metadata.name].path
        return f"add {path.name} to spec.ignores of FileWatch {watch.metadata.name} in {where}"
    try:
        line = path.relative_to(image.dir).as_posix()
    except ValueError:
        line = path.name
    return f"add the line {line} to {image.dir / '.dockerignore'}"


def hash_sources(image: Image, index: Index, cache: HashCache) -> dict[str, str]:
    """Each source file's path (relative to the image's spec folder) and content hash."""
    base = str(image.loc.path.parent) + "/"
    out: dict[str, str] = {}
    for text in source_texts(image, index):
        digest = cache.hash(text)
        if digest is not None:
            rel = text[len(base) :] if text.startswith(base) else os.path.relpath(text, base)
            out[rel] = digest
    return out


class ChangeFilter(watchfiles.DefaultFilter):
    """Lets through what can matter: never status files, editor temporaries, hidden entries
    (but for `allowed`, the daemon's trigger folder), or the daemon's own log."""

    def __init__(self, allowed: Path) -> None:
        super().__init__(ignore_dirs=(), ignore_entity_patterns=())
        self.allowed = str(allowed) + os.sep
        self.own_output = {str(p) for p in own_output()}  # the daemon's log: never an event

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        if path.startswith(self.allowed):
            return True
        return path not in self.own_output and not is_never_source(Path(path).name)


def watched_folders(base: Path, roots: list[Root], keep: set[Path]) -> list[Path]:
    """The folders under `base` worth watching: not hidden, and not ignored by every source
    root that covers them (unless a spec file lives there: `keep`). Pruned before entering."""
    by_path: dict[Path, list[Root]] = {}
    for root in roots:
        by_path.setdefault(root.path, []).append(root)
    kept = {a for k in keep for a in (k, *k.parents)}
    found = []
    for folder, dirs, _ in os.walk(base):
        here = Path(folder)
        found.append(here)
        dirs[:] = [d for d in dirs if enterable(here, d) and not _pruned(here / d, by_path, kept)]
    return found


def _pruned(path: Path, by_path: dict[Path, list[Root]], kept: set[Path]) -> bool:
    if path in kept:
        return False
    covering = [r for folder in (path, *path.parents) for r in by_path.get(folder, ())]
    return bool(covering) and all(r.ignored(path, True) for r in covering)
