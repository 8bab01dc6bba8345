"""Small builders of spec files for tests: YAML text for each object kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cmdimage_watch.graph import Index, build_index
from cmdimage_watch.specfiles import load_spec_file


def cmdimage(name: str, ref: str | None = None, **spec: Any) -> str:
    body: dict[str, Any] = {"ref": ref or name, "args": ["true"], **spec}
    return _doc("CmdImage", name, spec=body)


def imagemap(name: str, selector: str | None = None, status: dict[str, Any] | None = None) -> str:
    extra: dict[str, Any] = {"spec": {"selector": selector or name}}
    if status is not None:
        extra["status"] = status
    return _doc("ImageMap", name, **extra)


def cluster(name: str = "default", **spec: Any) -> str:
    return _doc("Cluster", name, spec=spec)


def filewatch(name: str, **spec: Any) -> str:
    return _doc("FileWatch", name, spec=spec)


def _doc(kind: str, name: str, **fields: Any) -> str:
    # JSON is YAML, and keeps these helpers free of quoting rules
    return json.dumps(
        {"apiVersion": "tilt.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, **fields}
    )


def write(path: Path, *docs: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n---\n".join(docs) + "\n")
    return path


def index_of(*paths: Path) -> Index:
    return build_index(load_spec_file(p) for p in paths)
