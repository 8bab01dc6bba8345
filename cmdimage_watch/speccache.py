"""What spec files held last time, by path and content hash, so a start parses only what
changed: ruamel's round-trip parser is most of a large tree's start-up.

Kept as JSON in the state folder. Each result is keyed by the file's bytes, and the cache
as a whole by the code that made it (a new loader never trusts an old one's results).
`project` and `daemon` pass it to `specfiles.load_spec_file`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from loguru import logger
from pydantic import ValidationError

from cmdimage_watch import models, statusfiles
from cmdimage_watch.specfiles import Entry, Loc, SpecFile

_CODE = (
    Path(__file__).parent / name
    for name in ("specfiles.py", "specerrors.py", "models.py", "refs.py")
)
VERSION = hashlib.blake2b(b"".join(p.read_bytes() for p in _CODE), digest_size=8).hexdigest()


class SpecCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.known: dict[str, dict[str, Any]] = self._read()
        self.used: dict[str, dict[str, Any]] = {}  # what this run saw: all that is saved

    def get(self, path: Path, data: bytes) -> SpecFile | None:
        record = self.used.get(str(path)) or self.known.get(str(path))
        if record is None or record.get("digest") != _digest(data):
            return None
        try:
            found = _decode(path, record)
        except (ValidationError, KeyError, TypeError, ValueError):
            return None
        self.used[str(path)] = record
        return found

    def put(self, path: Path, data: bytes, loaded: SpecFile) -> None:
        self.used[str(path)] = {"digest": _digest(data), **_encode(loaded)}

    def save(self) -> None:
        if self.used == self.known:
            return
        text = json.dumps({"version": VERSION, "files": self.used}, separators=(",", ":"))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            statusfiles.write_if_changed(self.path, text)
        except OSError as exc:
            logger.warning("could not save the spec cache {}: {}", self.path, exc)
        self.known = dict(self.used)

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != VERSION:
            return {}
        files = data.get("files")
        return files if isinstance(files, dict) else {}


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _encode(loaded: SpecFile) -> dict[str, Any]:
    entries = [
        {
            "kind": e.kind,
            "name": e.name,
            "at": [e.loc.line, e.loc.column],
            "obj": e.obj.model_dump(mode="json", by_alias=True, exclude_unset=True)
            if e.obj is not None
            else None,
            "error": e.error,
            "problems": list(e.problems),
            "marks": [list(m) for m in e.marks],
        }
        for e in loaded.entries
    ]
    return {"entries": entries, "error": loaded.error}


def _decode(path: Path, record: dict[str, Any]) -> SpecFile:
    entries = []
    for e in record["entries"]:
        obj = models.MODELS[e["kind"]].model_validate(e["obj"]) if e["obj"] is not None else None
        marks = tuple((str(m[0]), int(m[1]), int(m[2])) for m in e["marks"])
        at = Loc(path, *e["at"])
        entries.append(
            Entry(e["kind"], e["name"], at, obj, e["error"], tuple(e["problems"]), marks)
        )
    return SpecFile(path, tuple(entries), record["error"])
