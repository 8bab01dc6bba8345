"""The one way tests wait: poll a condition until it holds, with a deadline against hangs.

`wait_until` for code that waits in a thread of its own (a daemon in a subprocess);
`until`, its async twin, for code that shares the event loop with what it waits for.
The deadline is a guard against a hang, not a claim about speed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

POLL_S = 0.05
GUARD_S = 30.0  # a generous deadline: a failing condition fails, a slow machine does not
T = TypeVar("T")


def wait_until(check: Callable[[], T | None], what: str, timeout: float = GUARD_S) -> T:
    """Poll `check` every 50 ms until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL_S)


async def until(check: Callable[[], T | None], what: str, within: float = GUARD_S) -> T:
    """`wait_until` on the running loop: the awaited work goes on between polls."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(POLL_S / 5)
