"""Spec files in: YAML text to validated Tilt objects, each with its file, line and column.

Everything that can go wrong with a file (size, encoding, syntax, aliases, nesting, a
non-mapping document) becomes a `SpecFile.error`; everything wrong with one object becomes
that entry's `error`. Nothing here raises past `load_spec_file`. `graph` consumes the result.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from loguru import logger
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.constructor import ConstructorError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scalarbool import ScalarBoolean

from cmdimage_watch import models, specerrors
from cmdimage_watch.regularfiles import NotRegularFile, open_regular

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 100
MAX_NODES = 200_000  # what alias expansion may reach before we call it a bomb
TILT_MARKER = models.API_VERSION


@dataclass(frozen=True)
class Loc:
    """A 1-based position in a spec file, printed the way editors and compilers do."""

    path: Path
    line: int = 1
    column: int = 1

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Entry:
    """One Tilt object of a spec file: valid (`obj` set) or not (`error` set).

    `error` is short (the first problem, and how many more), for a status's reason;
    `problems` has every one, `file:line:col: field: message`, in file order, for `validate`.
    `marks` are where the fields of `metadata` and `spec` stand, so that a later check (an
    unknown Cluster, a registry that makes the ref too long) can point at its field."""

    kind: str
    name: str
    loc: Loc
    obj: models.TiltObject | None = None
    error: str = ""
    problems: tuple[str, ...] = field(default=(), compare=False)
    marks: tuple[tuple[str, int, int], ...] = field(default=(), compare=False, repr=False)

    def at(self, field_path: str) -> Loc:
        """Where `spec.cluster` (or its nearest marked parent) stands; else the object."""
        found = {name: (line, column) for name, line, column in self.marks}
        while field_path:
            if field_path in found:
                return Loc(self.loc.path, *found[field_path])
            field_path = field_path.rpartition("[" if field_path.endswith("]") else ".")[0]
        return self.loc


@dataclass(frozen=True)
class SpecFile:
    path: Path
    entries: tuple[Entry, ...] = ()
    error: str = ""  # "file:line:col: message" when the file as a whole cannot be read

    @property
    def is_spec(self) -> bool:
        return bool(self.entries or self.error)


class SpecFileError(Exception):
    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(f"{loc}: {message}")


def keep_last_good(old: SpecFile | None, new: SpecFile) -> SpecFile:
    """`new`, but while it (or one of its objects) is broken, with the last good objects of
    `old` in place of the broken ones; their errors stay, so they are reported."""
    if old is None:
        return new
    if new.error:
        return SpecFile(new.path, old.entries, new.error)
    good = {(e.kind, e.name): e.obj for e in old.entries if e.obj is not None}
    entries = tuple(
        replace(e, obj=good.get((e.kind, e.name))) if e.error and e.name else e for e in new.entries
    )
    return SpecFile(new.path, entries)


# --- reading --------------------------------------------------------------------------


class Cache(Protocol):
    """Earlier results by path and content (see `speccache`)."""

    def get(self, path: Path, data: bytes) -> SpecFile | None: ...

    def put(self, path: Path, data: bytes, loaded: SpecFile) -> None: ...


def load_spec_file(path: Path, cache: Cache | None = None) -> SpecFile:
    """Read one file; a file with none of our objects comes back with no entries. A FIFO,
    socket, device or dangling symlink is never opened for good: one warning, no entries."""
    try:
        data, size = _read(path)
    except NotRegularFile as exc:
        logger.warning("{}", exc)
        return SpecFile(path)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        if path.is_symlink():
            logger.warning("{} is a symlink to nothing ({}); skipped", path, path.readlink())
        return SpecFile(path)  # gone since whatever named it: a missing file means deleted
    except OSError as exc:
        return SpecFile(path, error=f"{Loc(path)}: cannot read the file: {exc.strerror or exc}")
    found = cache.get(path, data) if cache is not None else None
    if found is None:
        found = _load(path, data, size)
        if cache is not None:
            cache.put(path, data, found)
    return found


def _load(path: Path, data: bytes, size: int) -> SpecFile:
    try:
        text = _decode(path, data, size)
        entries = tuple(e for doc in _parse(path, text) for e in _entries(doc))
    except SpecFileError as exc:
        if TILT_MARKER.encode() not in data:
            return SpecFile(path)  # a broken file that never was ours: not our business
        return SpecFile(path, error=str(exc))
    return SpecFile(path, entries)


def _read(path: Path) -> tuple[bytes, int]:
    """At most one byte more than the limit (a huge file costs no memory), and the real size."""
    with open_regular(path) as f:
        return f.read(MAX_FILE_BYTES + 1), os.fstat(f.fileno()).st_size


def _decode(path: Path, data: bytes, size: int) -> str:
    if len(data) > MAX_FILE_BYTES:
        raise SpecFileError(
            Loc(path), f"file is {max(size, len(data))} bytes; spec files are limited to 1 MiB"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecFileError(
            _loc_after(path, data[: exc.start].decode("utf-8")),
            f"byte 0x{data[exc.start]:02x} is not UTF-8; save the file as UTF-8",
        ) from None


_LINE_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")  # what ruamel counts as one


def _loc_after(path: Path, before: str) -> Loc:
    """The position that follows the text `before`, in characters as ruamel's marks are."""
    lines = _LINE_BREAK.split(before)
    return Loc(path, len(lines), len(lines[-1]) + 1)


Positions = dict[tuple[str | int, ...], Loc]


@dataclass
class _Doc:
    value: Any
    loc: Loc
    positions: Positions = field(default_factory=dict)

    def locate(self, path: tuple[str | int, ...]) -> Loc:
        """The deepest known position along `path` (a key or item of the document)."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.positions:
                return self.positions[path[:end]]
        return self.loc


def _parse(path: Path, text: str) -> list[_Doc]:
    docs: list[_Doc] = []
    for raw, loc in _load_all(path, text):
        doc = _Doc(None, loc)
        doc.value = _Copier(path, doc.positions).copy(raw, (), 0)
        docs.append(doc)
    return docs


def _load_all(path: Path, text: str) -> Iterator[tuple[Any, Loc]]:
    """ruamel's documents, each with where it starts; what it raises on bad input is a
    SpecFileError."""
    yaml = _yaml()
    stream = yaml.load_all(text)
    try:
        while True:
            try:
                raw = next(stream)
            except StopIteration:
                return
            except MarkedYAMLError as exc:
                raise SpecFileError(_mark_loc(path, exc), _yaml_message(exc)) from None
            except ReaderError as exc:
                char = exc.character if isinstance(exc.character, int) else ord(exc.character)
                raise SpecFileError(
                    _loc_after(path, text[: exc.position]),
                    f"character U+{char:04X} is not allowed in YAML; delete it",
                ) from None
            except YAMLError as exc:
                raise SpecFileError(Loc(path), str(exc).strip()) from None
            except RecursionError:
                raise SpecFileError(Loc(path), f"nested deeper than {MAX_DEPTH} levels") from None
            except Exception as exc:  # ruamel's own bugs on odd input (`!!omap` repeating a key)
                raise SpecFileError(Loc(path), f"unreadable YAML: {exc!r}") from None
            mark = yaml.constructor.document_start
            yield raw, Loc(path, mark.line + 1, mark.column + 1)
    finally:
        stream.close()


class FastYAML(YAML):
    """ruamel's YAML without its plug-in search: a glob of site-packages on every instance,
    which took more time than parsing a spec file."""

    def official_plug_ins(self) -> list[Any]:
        return []


def _yaml() -> YAML:
    yaml = FastYAML(typ="rt")
    yaml.Constructor = _Constructor
    yaml.max_depth = MAX_DEPTH + 1  # the composer counts the document itself; ruamel >= 0.19
    yaml.composer.warn_double_anchors = False  # YAML allows redefining one; the last one counts
    return yaml


class _Constructor(RoundTripConstructor):
    """ruamel's, except that a value it cannot convert (`2024-02-30`, `!!int x`) is a marked
    error rather than a bare ValueError or KeyError."""

    document_start: Any = None

    def construct_document(self, node: Any) -> Any:
        self.document_start = node.start_mark  # a scalar document has no other position
        return super().construct_document(node)

    def construct_non_recursive_object(self, node: Any, tag: Any = None) -> Any:
        try:
            return super().construct_non_recursive_object(node, tag)
        except (ValueError, KeyError, TypeError) as exc:
            kind = str(tag or node.tag).rpartition(":")[2]
            problem = f"cannot read this {kind} value: {exc}"
            raise ConstructorError(None, None, problem, node.start_mark) from None


def _mark_loc(path: Path, exc: MarkedYAMLError) -> Loc:
    mark = exc.problem_mark or exc.context_mark
    return Loc(path, mark.line + 1, mark.column + 1) if mark else Loc(path)


def _yaml_message(exc: MarkedYAMLError) -> str:
    problem = str(exc.problem or exc.context or "invalid YAML")
    if problem.startswith("maximum depth"):
        return f"nested deeper than {MAX_DEPTH} levels"
    if "\\t" in problem or "\t" in problem or "tab" in problem:
        return f"{problem} (YAML indents with spaces, not tabs)"
    return problem


@dataclass
class _Copier:
    """Copies ruamel's tree into plain values, noting positions, bounding depth and aliases."""

    path: Path
    positions: Positions
    count: int = 0

    def copy(self, node: Any, at: tuple[str | int, ...], depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise SpecFileError(
                self._loc(at), f"more than {MAX_NODES} values after expanding aliases"
            )
        if depth > MAX_DEPTH:
            raise SpecFileError(self._loc(at), f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            keys = {k: self._text(str(k), at) for k in node}
            return {keys[k]: self._child(node, k, (*at, keys[k]), depth) for k in node}
        if isinstance(node, list):
            return [self._child(node, i, (*at, i), depth) for i in range(len(node))]
        value = _plain(node)
        return self._text(value, at) if isinstance(value, str) else value

    def _text(self, value: str, at: tuple[str | int, ...]) -> str:
        """`value`, with JSON-style surrogate pairs (`"\\ud83d\\ude00"`, which YAML leaves as
        two halves) joined into their character; a lone half is no character at all."""
        if value.isascii() or not any("\ud800" <= ch <= "\udfff" for ch in value):
            return value
        try:
            return value.encode("utf-16", "surrogatepass").decode("utf-16")
        except UnicodeDecodeError:
            raise SpecFileError(
                self._loc(at),
                "a string holds half of a UTF-16 surrogate pair, which is no character",
            ) from None

    def _child(self, parent: Any, key: Any, at: tuple[str | int, ...], depth: int) -> Any:
        if at not in self.positions:
            self.positions[at] = self._position(parent, key) or self._loc(at[:-1])
        return self.copy(parent[key], at, depth + 1)

    def _position(self, parent: Any, key: Any) -> Loc | None:
        try:
            if isinstance(parent, CommentedMap):
                line, col = parent.lc.key(key)
            elif isinstance(parent, CommentedSeq):
                line, col = parent.lc.item(key)
            else:
                return None
        except (KeyError, IndexError, TypeError):
            return None
        return Loc(self.path, line + 1, col + 1)

    def _loc(self, at: tuple[str | int, ...]) -> Loc:
        return self.positions.get(at, Loc(self.path))


def _plain(value: Any) -> Any:
    """A scalar as the builtin value JSON would carry: ruamel's subclasses keep style, and a
    tagged scalar or bytes would break `model_dump(mode="json")` of an `Any` field later."""
    if isinstance(value, TaggedScalar):
        return value.value  # a local tag (`!foo x`) means nothing to Tilt
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()  # `!!binary`, as Kubernetes' JSON has []byte
    if isinstance(value, bool | ScalarBoolean):  # before int: both are ints to Python
        return bool(value)
    for builtin in (str, int, float):
        if isinstance(value, builtin):
            return builtin(value)
    return value


# --- documents to objects --------------------------------------------------------------


def _entries(doc: _Doc) -> Iterator[Entry]:
    value = doc.value
    if value is None:
        return
    if not isinstance(value, dict):
        raise SpecFileError(doc.loc, f"a document must be a mapping, not {_type_name(value)}")
    api, kind = value.get("apiVersion"), value.get("kind")
    if not isinstance(kind, str):
        return  # not a kind we know (and a mapping or list would not even hash)
    if api == "v1" and kind == "List":
        yield from _items(doc, None)
    elif api == models.API_VERSION and kind in models.LIST_KINDS:
        yield from _items(doc, models.LIST_KINDS[kind])
    elif api == models.API_VERSION and kind in models.MODELS:
        yield _entry(doc, value, ())


def _items(doc: _Doc, kind: str | None) -> Iterator[Entry]:
    """The objects of a List. In a CmdImageList or ImageMapList (`kind`), an item that is
    no mapping is an error at that item; a Kubernetes List may hold anything."""
    items = doc.value.get("items") or []
    if kind and not isinstance(items, list):
        list_kind = doc.value["kind"]
        yield _junk(doc, ("items",), kind, f"a {list_kind} holds a list, not {_type_name(items)}")
        return
    for i, item in enumerate(items if isinstance(items, list) else []):
        if not isinstance(item, dict):
            if kind:
                yield _junk(
                    doc, ("items", i), kind, f"a {kind} is a mapping, not {_type_name(item)}"
                )
            continue
        if kind and "kind" not in item:
            item = {"apiVersion": models.API_VERSION, "kind": kind, **item}
        if item.get("apiVersion") == models.API_VERSION and _str(item.get("kind")) in models.MODELS:
            yield _entry(doc, item, ("items", i))


def _junk(doc: _Doc, at: tuple[str | int, ...], kind: str, message: str) -> Entry:
    problem = f"{doc.locate(at)}: {specerrors.field_path(at)}: {message}"
    return Entry(kind, "", doc.locate(at), error=f"invalid spec: {problem}", problems=(problem,))


def _entry(doc: _Doc, value: dict[str, Any], at: tuple[str | int, ...]) -> Entry:
    kind = str(value["kind"])
    meta = value.get("metadata")
    name = str(meta.get("name") or "") if isinstance(meta, dict) else ""
    loc = doc.locate(at)
    model = models.MODELS[kind]
    if model is not models.ImageMap:
        value = {k: v for k, v in value.items() if k != "status"}  # only ImageMaps keep one
    marks = _marks(doc, at)
    try:
        obj = model.model_validate(value, by_name=False)  # Tilt's camelCase names only
    except ValidationError as exc:
        short, every = _invalid(exc, doc, at, model)
        return Entry(kind, name, loc, error=short, problems=every, marks=marks)
    return Entry(kind, name, loc, obj, marks=marks)


MARKED_DEPTH = 5  # `spec.imageMaps[0]`, `spec.ignores[0].patterns[1]` (for explain)


def _marks(doc: _Doc, at: tuple[str | int, ...]) -> tuple[tuple[str, int, int], ...]:
    found = []
    for key, loc in doc.positions.items():
        inner = key[len(at) :]
        if key[: len(at)] == at and 0 < len(inner) <= MARKED_DEPTH:
            found.append((specerrors.field_path(inner), loc.line, loc.column))
    return tuple(found)


# --- validation errors with positions and hints ----------------------------------------


def _invalid(
    exc: ValidationError, doc: _Doc, at: tuple[str | int, ...], model: type[BaseModel]
) -> tuple[str, tuple[str, ...]]:
    """The short reason (first problem, and how many more) and every problem in file order."""
    errors = exc.errors(include_url=False)
    # An unknown key first: `arg:` for `args:` also makes `args` missing; the hint explains both.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    more = exc.error_count() - 1
    suffix = f" (+{more} more)" if more else ""
    placed = sorted(
        ((doc.locate(at + tuple(e["loc"])), i) for i, e in enumerate(errors)),
        key=lambda pair: (pair[0].line, pair[0].column, pair[1]),
    )
    every = tuple(dict.fromkeys(_problem(loc, errors[i], model) for loc, i in placed))
    short = _problem(doc.locate(at + tuple(first["loc"])), first, model)
    return f"invalid spec: {short}{suffix}", every


def _problem(where: Loc, error: ErrorDetails, model: type[BaseModel]) -> str:
    return f"{where}: {specerrors.field_path(error['loc'])}: {specerrors.describe(error, model)}"


def _type_name(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), ((int, float), "a number"), (str, "a string")):
        if isinstance(value, kind):
            return name
    return "a list" if isinstance(value, list) else type(value).__name__


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""
