"""FileWatch statuses (Tilt's FileWatchStatus): when each was first seen, and its events.

Pure updates of `status.State.file_watches` from the index and a batch of changed paths;
each returns the spec files whose status files must be written. Called by `dispatch` (and
by `daemon` at start-up).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from cmdimage_watch import models, sources, status
from cmdimage_watch.graph import Index


def track(index: Index, state: status.State, now: datetime) -> list[Path]:
    """A FileWatch is monitored from when it is first seen (Tilt's monitorStartTime); one
    that is gone keeps no status. The spec files of the new ones."""
    watches, new = state.file_watches, []
    for name in index.file_watches.keys() - watches.keys():
        watches[name] = models.FileWatchStatus(monitor_start_time=now)
        new.append(index.file_watch_locs[name].path)
    for name in watches.keys() - index.file_watches.keys():
        del watches[name]
    return new


def record(index: Index, state: status.State, paths: set[Path], now: datetime) -> list[Path]:
    """One file event on each FileWatch that covers some of `paths`; their spec files."""
    hit = []
    for name, watch in index.file_watches.items():
        folder = index.file_watch_locs[name].path.parent
        roots = sources.file_watch_roots(watch, folder)
        seen = [str(p) for p in paths if any(r.covers(p) for r in roots)]
        if seen:
            state.file_watches[name] = status.file_event(state.file_watches.get(name), now, seen)
            hit.append(index.file_watch_locs[name].path)
    return hit
