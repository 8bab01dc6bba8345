"""The watched tree as a whole: which files are specs, the state folder, statuses on disk.

`scan` finds the spec files, `load` indexes them, `read_state` takes back what earlier runs
wrote (statuses, digests, the inputs of each last good build), `status_documents` and
`write_status_text` make and write the status file of a spec file. `cli`, `daemon`,
`specset`, `statuswriter`, `progress` and `reconcile` call these.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from loguru import logger
from pydantic import ValidationError

from cmdimage_watch import models, sources, specfiles, status, statusfiles
from cmdimage_watch.graph import Index, build_index
from cmdimage_watch.regularfiles import NotRegularFile, read_regular
from cmdimage_watch.settings import state_file_name
from cmdimage_watch.sources import Inputs

YAML_SUFFIXES = tuple(statusfiles.STATUS_SUFFIXES)


def is_spec_candidate(path: Path, root: Path) -> bool:
    """A YAML file that is not a status file, not hidden, not an editor temporary."""
    try:
        *folders, name = path.relative_to(root).parts
    except ValueError:
        return False
    return is_spec_name(name) and not any(map(sources.is_hidden_folder, folders))


def is_spec_name(name: str) -> bool:
    """The name of a YAML file (`.yaml` alone has no suffix, as pathlib sees it) that is no
    status file and no editor temporary: the rule `is_spec_candidate` and `walk` share."""
    return (
        name.endswith(YAML_SUFFIXES)
        and name not in YAML_SUFFIXES
        and not sources.is_never_source(name)  # status files among them
    )


def scan(root: Path) -> list[Path]:
    return walk(root)[0]


def walk(root: Path) -> tuple[list[Path], list[Path]]:
    """One walk of the tree: its spec files (candidates) and its status files. Names are
    looked at before paths are made: most files of a tree are neither."""
    specs, statuses = [], []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not sources.is_hidden_folder(d))
        base = Path(folder)
        for name in sorted(files):
            if is_spec_name(name):
                specs.append(base / name)
            elif statusfiles.is_status_name(name):
                statuses.append(base / name)
    return specs, statuses


def spec_files_touched(paths: set[Path], known: Collection[Path], root: Path) -> set[Path]:
    """The spec files a batch of changed paths touches: named in it, or inside a folder that
    came (a `mv` or `mkdir` names only the folder) or went. A file in a folder that was moved
    away can still be named by its old path, so a missing path stands for its outermost
    missing folder."""
    found = {p for p in paths if p in known or is_spec_candidate(p, root)}
    gone = set[Path]()
    for path in paths:
        if path.is_dir():
            found.update(p for p in files_under(path) if is_spec_candidate(p, root))
        elif not path.exists():
            gone.add(_outermost_missing(path, root))
    if gone:
        found.update(f for f in known if gone.intersection(f.parents))
    return found


def _outermost_missing(path: Path, root: Path) -> Path:
    while root in path.parent.parents and not path.parent.exists():
        path = path.parent
    return path


def files_under(folder: Path) -> Iterable[Path]:
    for base, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not sources.is_hidden_folder(d)]
        yield from (Path(base) / name for name in files)


def load(root: Path, cache: specfiles.Cache | None = None) -> Index:
    loaded = (specfiles.load_spec_file(path, cache) for path in scan(root))
    return build_index(f for f in loaded if f.is_spec)  # a YAML file of none of ours is a source


def read_state(
    index: Index, state_dir: Path, cache: statusfiles.StatusCache | None = None
) -> tuple[status.State, dict[str, Inputs]]:
    """What earlier runs left: statuses and digests of our images, and their last inputs."""
    state = status.State()
    read = statusfiles.read_status_file if cache is None else cache.read
    for path in index.files:
        for doc in read(statusfiles.status_path(path)):
            _take(doc, index, state)
    inputs: dict[str, Inputs] = {}
    for name in state.digests:
        found = read_inputs(state_dir, name)
        if found is not None and found.digest() == state.digests[name]:
            inputs[name] = found
    return state, inputs


def image_names(index: Index) -> set[str]:
    """The names of the tree's CmdImages, valid or not (an unnamed one is `validate`'s)."""
    return {
        e.name for f in index.files.values() for e in f.entries if e.kind == "CmdImage" and e.name
    }


def kept_statuses(index: Index) -> list[tuple[Path, str, models.CmdImageStatus]]:
    """The CmdImages a spec file that cannot be parsed held when last good, as its status
    file (written by the daemon, which keeps them in force) shows them: (file, name, status)."""
    found = []
    for path, spec_file in index.files.items():
        if not spec_file.error or spec_file.entries:
            continue
        for doc in statusfiles.read_status_file(statusfiles.status_path(path)):
            meta, value = doc.get("metadata"), doc.get("status") or {}
            name = meta.get("name") if isinstance(meta, dict) else None
            if doc.get("kind") != "CmdImage" or not isinstance(name, str):
                continue
            with contextlib.suppress(ValidationError):
                found.append((path, name, models.CmdImageStatus.model_validate(value)))
    return found


def _take(doc: dict[str, Any], index: Index, state: status.State) -> None:
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        return
    name = meta.get("name")
    if not isinstance(name, str):
        return
    try:
        if doc.get("kind") == "CmdImage" and name in index.images:
            state.images[name] = models.CmdImageStatus.model_validate(doc.get("status") or {})
            annotations = meta.get("annotations")
            for key, table in (
                (status.INPUTS_DIGEST, state.digests),
                (status.FAILED_DIGEST, state.failed),
            ):
                digest = annotations.get(key) if isinstance(annotations, dict) else None
                if isinstance(digest, str):
                    table[name] = digest
        elif doc.get("kind") == "ImageMap" and name in index.publishers:
            found = models.ImageMapStatus.model_validate(doc.get("status") or {})
            if found.image_from_local:
                state.image_maps[name] = found
    except ValidationError:
        logger.warning("ignoring an unreadable status of {} {}", doc.get("kind"), name)


def inputs_path(state_dir: Path, name: str) -> Path:
    return state_dir / "inputs" / state_file_name(name, ".json")


def read_inputs(state_dir: Path, name: str) -> Inputs | None:
    try:
        return Inputs.from_json(inputs_path(state_dir, name).read_text("utf-8"))
    except OSError:
        return None


def write_inputs(state_dir: Path, name: str, inputs: Inputs) -> None:
    path = inputs_path(state_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    statusfiles.write_if_changed(path, inputs.to_json())


def read_hashes(state_dir: Path) -> sources.HashCache:
    try:
        return sources.HashCache.from_json((state_dir / "hashes.json").read_text("utf-8"))
    except (OSError, UnicodeDecodeError):
        return sources.HashCache()


def write_hashes(state_dir: Path, cache: sources.HashCache) -> None:
    """Keep the content hashes for the next start; a failure only costs that start time.
    Unchanged, they are not encoded again (20,000 of them hold the loop for 0.1 s)."""
    kept = cache.kept()
    if kept == cache.saved:
        return
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        statusfiles.write_if_changed(state_dir / "hashes.json", cache.to_json(kept))
    except OSError as exc:
        logger.warning("could not keep the content hashes in {}: {}", state_dir, exc)
        return
    cache.saved = kept


def status_documents(index: Index, state: status.State, path: Path) -> statusfiles.Docs | None:
    """The documents of the status file of spec file `path`; None when it should not exist."""
    spec_file = index.files.get(path)
    if spec_file is None or not spec_file.is_spec:
        return None
    return status.documents(spec_file, index, state)


def write_status_text(path: Path, text: str | None, durable: bool = True) -> bool:
    """Put `text` in the status file of `path` (None removes it); False when that failed
    (logged, not raised: a full disk must not stop the daemon). Safe in any thread."""
    target = statusfiles.status_path(path)
    try:
        if text is None:
            target.unlink(missing_ok=True)
        else:
            statusfiles.write_if_changed(target, text, durable)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) and not path.exists():
            # its folder was moved or removed: the change that says so drops it
            logger.debug("{} is gone; so is its status file", path)
            return True
        logger.error("could not write {}: {}; it is retried on the next change", target, exc)
        return False
    return True


def files_showing(index: Index, names: Iterable[str]) -> set[Path]:
    """The spec files whose status files show these CmdImages or the ImageMaps they publish."""
    paths: set[Path] = set()
    for name in names:
        image = index.images.get(name)
        if image is None:
            continue
        paths.add(image.loc.path)
        if image.publishes in index.image_map_locs:
            paths.add(index.image_map_locs[image.publishes].path)
    return paths


def remove_stale(index: Index, root: Path, found: list[Path] | None = None) -> None:
    """Remove the status files (those `found` by a walk just made, else all under `root`)
    whose spec file is gone or holds none of our objects."""
    for path in walk(root)[1] if found is None else found:
        if _spec_of(path) not in index.files:
            _remove(path)


def _spec_of(status_path: Path) -> Path:
    name = status_path.name
    for spec_suffix, status_suffix in statusfiles.STATUS_SUFFIXES.items():
        if name.endswith(status_suffix):
            return status_path.with_name(name.removesuffix(status_suffix) + spec_suffix)
    return status_path


def _remove(path: Path) -> None:
    """Only what we wrote: a user's own `health.status.yaml` is none of our business."""
    try:
        if read_regular(path, len(statusfiles.STATUS_HEADER)) == statusfiles.STATUS_HEADER:
            path.unlink()
    except NotRegularFile:
        return  # a FIFO or folder of that name is not ours
    except OSError as exc:
        logger.error("could not remove the stale status file {}: {}", path, exc)


def problems(index: Index) -> list[str]:
    """Every error in the tree as `file:line:col: message`, one per problem, in file order."""
    found: list[str] = []
    for spec_file in index.files.values():
        if spec_file.error:
            found.append(spec_file.error)
        for entry in spec_file.entries:
            problem = index.problem(entry)
            if entry.problems:
                found.extend(entry.problems)
            elif problem.startswith("invalid spec: "):
                found.append(problem.removeprefix("invalid spec: "))
            elif problem:  # a dependency cycle: at the image maps that close it
                found.append(f"{entry.at('spec.imageMaps')}: spec.imageMaps: {problem}")
            elif entry.kind == "CmdImage":
                found.extend(_unresolved(index, entry))
    return found


def _unresolved(index: Index, entry: specfiles.Entry) -> list[str]:
    image = index.images[entry.name]
    found = [
        f"{entry.at(f'spec.imageMaps[{i}]')}: spec.imageMaps[{i}]: {index.unknown_map_reason(m)}"
        for i, m in enumerate(image.spec.image_maps)
        if m not in index.publishers and m not in index.image_maps
    ]
    if image.cluster in index.invalid_clusters:
        return found  # the Cluster's own problems are listed at its fields
    if image.cluster != "default" and image.cluster not in index.clusters:
        where = entry.at("spec.cluster")
        found.append(f"{where}: spec.cluster: no Cluster named {image.cluster}")
    elif misfit := index.registry_misfit(image):
        found.append(f"{entry.at('spec.ref')}: {misfit}")
    return found
