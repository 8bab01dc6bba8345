"""Processes as the tests see them: alive or not, and the live members of a process group.

A zombie counts as gone: it runs nothing, it only awaits reaping.
"""

from __future__ import annotations

import contextlib
import os

import psutil


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not: it runs nothing, only awaits reaping)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def group_members(pgid: int) -> list[psutil.Process]:
    """The live (non-zombie) processes of process group `pgid`."""
    found = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                found.append(proc)
    return found
