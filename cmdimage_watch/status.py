"""Status values: pure constructors for each state, and the documents of a status file.

Times are arguments, so nothing here reads a clock. `scheduler` and `builder` make the
values; `documents` turns what is known about one spec file into the YAML documents that
`statusfiles.render_status` writes beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from cmdimage_watch import models
from cmdimage_watch.graph import Index
from cmdimage_watch.specfiles import Entry, SpecFile

INPUTS_DIGEST = "cmdimage-watch.dev/inputs-digest"
FAILED_DIGEST = "cmdimage-watch.dev/failed-digest"  # inputs of the failure it shows
ERROR_API_VERSION = "cmdimage-watch.dev/v1"


def waiting(reason: str) -> models.CmdImageStatus:
    return models.CmdImageStatus(waiting=models.CmdImageStateWaiting(reason=reason))


def building(reason: str, started_at: datetime) -> models.CmdImageStatus:
    state = models.CmdImageStateBuilding(reason=reason, started_at=started_at)
    return models.CmdImageStatus(building=state)


def succeeded(
    ref: str, reason: str, started_at: datetime, finished_at: datetime
) -> models.CmdImageStatus:
    done = models.CmdImageStateCompleted(
        reason=reason, started_at=started_at, finished_at=finished_at
    )
    return models.CmdImageStatus(ref=ref, completed=done)


ERROR_MAX = 4000  # characters of an error a status file holds; the build log keeps the rest


def failed(
    error: str, reason: str, started_at: datetime, finished_at: datetime
) -> models.CmdImageStatus:
    if len(error) > ERROR_MAX:
        error = f"{error[:ERROR_MAX]}… (cut: {len(error)} characters; the build log has it all)"
    done = models.CmdImageStateCompleted(
        reason=reason, error=error, started_at=started_at, finished_at=finished_at
    )
    return models.CmdImageStatus(completed=done)


def cancelled(
    error: str, reason: str, started_at: datetime, finished_at: datetime
) -> models.CmdImageStatus:
    """A build stopped before its end: shown as Tilt shows it, a completion with an error,
    but never recorded as a failure of its inputs (they are built again)."""
    return failed(error, reason, started_at, finished_at)


def published(local_ref: str, cluster_ref: str, started_at: datetime) -> models.ImageMapStatus:
    return models.ImageMapStatus(
        image=cluster_ref,
        image_from_local=local_ref,
        image_from_cluster=cluster_ref,
        build_start_time=started_at,
    )


@dataclass
class State:
    """What is known of every object, by name; the daemon's memory and the files' content."""

    images: dict[str, models.CmdImageStatus] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)  # of the last successful build
    failed: dict[str, str] = field(default_factory=dict)  # of a failed build shown now
    image_maps: dict[str, models.ImageMapStatus] = field(default_factory=dict)
    file_watches: dict[str, models.FileWatchStatus] = field(default_factory=dict)


def dump(value: BaseModel | None) -> dict[str, Any]:
    """Tilt's omitempty: no nulls, no empty strings or lists."""
    if value is None:
        return {}
    return value.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)


def document(kind: str, name: str, status: dict[str, Any], **annotations: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": models.API_VERSION, "kind": kind, "metadata": metadata, "status": status}


def documents(spec_file: SpecFile, index: Index, state: State) -> list[dict[str, Any]]:
    docs = [_entry_document(entry, index, state) for entry in spec_file.entries]
    for entry in spec_file.entries:
        image = index.images.get(entry.name) if entry.kind == "CmdImage" else None
        if image and image.loc == entry.loc and image.publishes not in index.image_maps:
            status = dump(state.image_maps.get(image.publishes))
            docs.append(document("ImageMap", image.publishes, status))
    if spec_file.error:
        meta = {"name": spec_file.path.name}
        error = {"error": spec_file.error}
        docs.append({"apiVersion": ERROR_API_VERSION, "kind": "SpecFileError", "metadata": meta})
        docs[-1].update(error)
    return docs


def _entry_document(entry: Entry, index: Index, state: State) -> dict[str, Any]:
    problem = index.problem(entry)
    if problem:
        return document(entry.kind, entry.name, dump(waiting(problem)))
    if entry.kind == "CmdImage":
        status = dump(state.images.get(entry.name))
        annotations = {
            key: table[entry.name]
            for key, table in ((INPUTS_DIGEST, state.digests), (FAILED_DIGEST, state.failed))
            if entry.name in table
        }
        return document(entry.kind, entry.name, status, **annotations)
    if entry.kind == "ImageMap":
        return document(entry.kind, entry.name, dump(image_map_status(entry.name, index, state)))
    if entry.kind == "FileWatch":
        return document(entry.kind, entry.name, dump(state.file_watches.get(entry.name)))
    return document(entry.kind, entry.name, {})


MAX_FILE_EVENTS = 20  # as Tilt keeps


def file_event(
    old: models.FileWatchStatus | None, now: datetime, seen: list[str]
) -> models.FileWatchStatus:
    """`old` with one more event of `seen` files at `now`, keeping the last twenty."""
    old = old or models.FileWatchStatus(monitor_start_time=now)
    events = [*old.file_events, models.FileEvent(time=now, seen_files=sorted(seen))]
    return old.model_copy(update={"last_event_time": now, "file_events": events[-MAX_FILE_EVENTS:]})


def image_map_status(name: str, index: Index, state: State) -> models.ImageMapStatus | None:
    """What an ImageMap resolves to: our last good build, else a status written by hand."""
    if name in state.image_maps:
        return state.image_maps[name]
    declared = index.image_maps.get(name)
    if declared and declared.status and (declared.status.image or declared.status.image_from_local):
        return declared.status
    return None
