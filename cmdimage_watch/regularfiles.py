"""Reading files of the user's tree without ever blocking: regular files only.

A FIFO named `x.yaml` (or `x.status.yaml`, or among an image's sources) would block `open()`
for ever, and a symlink to `/dev/zero` would never end a read. Every read of a file that a
user can put in the tree (`specfiles`, `statusfiles`, `sources`, `project`) opens it here:
without blocking, then checks what it is, after symlinks.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO


class NotRegularFile(OSError):
    """`path` is a FIFO, socket, device or folder: it is skipped, never read."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(errno.EINVAL, f"{path} is {kind}, not a regular file; skipped")
        self.kind = kind

    def __str__(self) -> str:
        return str(self.strerror)  # without OSError's "[Errno 22] " in front


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for binary reading if it is a regular file; NotRegularFile if not."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket, or a FIFO's end with no reader
            raise NotRegularFile(path, "a socket") from None
        if exc.errno == errno.EISDIR:
            raise NotRegularFile(path, "a folder") from None
        raise
    try:
        kind = _kind(os.fstat(fd).st_mode)
        if kind:
            raise NotRegularFile(path, kind)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path, limit: int = -1) -> bytes:
    """The bytes of a regular file (at most `limit` of them when given)."""
    with open_regular(path) as f:
        return f.read(limit)


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return ""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"
