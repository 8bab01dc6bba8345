"""The shipped schema against the spec files the tests write (issue 14, part 4): every file
under a test's tmp_path that the daemon loads without an error, an editor holding the schema
must accept too. `tests/conftest.py` runs this after each test that has a tmp_path."""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

from jsonschema import Draft202012Validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from cmdimage_watch import project
from cmdimage_watch.schema import SHIPPED
from cmdimage_watch.specfiles import load_spec_file

REPO = Path(__file__).resolve().parent.parent.parent
MAX_FILES = 50  # of one test: a tree of 1,000 images repeats one template
MAX_BYTES = 256 * 1024  # the hostile tests' huge files are not fixtures anyone edits


@functools.cache
def shipped() -> Draft202012Validator:
    found = json.loads((REPO / SHIPPED).read_text("utf-8"))
    Draft202012Validator.check_schema(found)
    return Draft202012Validator(found)


def refused(root: Path, validator: Draft202012Validator | None = None) -> list[str]:
    """`path: document N: where: why` for each document of a spec file under `root` that
    loads without an error (every object valid) and that the schema refuses."""
    validator = validator or shipped()
    found = []
    for path in project.scan(root)[:MAX_FILES]:
        for n, doc in enumerate(_valid_documents(path), 1):
            found += [
                f"{path}: document {n}: {error.json_path}: {error.message}"
                for error in validator.iter_errors(doc)
            ]
    return found


def _valid_documents(path: Path) -> list[object]:
    """The documents of `path` when the daemon loads it with no error, else none."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_BYTES:  # no FIFO, no device
            return []
        loaded = load_spec_file(path)
        if loaded.error or not loaded.entries or any(e.error for e in loaded.entries):
            return []
        with warnings.catch_warnings():  # a redefined anchor: legal, as the daemon reads it
            warnings.simplefilter("ignore")
            docs = YAML(typ="safe", pure=True).load_all(path.read_text("utf-8"))
            return [doc for doc in docs if doc is not None]
    except (OSError, UnicodeDecodeError, YAMLError):  # gone, or YAML only the daemon reads
        return []
