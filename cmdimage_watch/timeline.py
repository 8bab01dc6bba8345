"""At `-vv`, each step of a change on its way to a build, stamped to the microsecond.

`seen` (watchfiles handed the change over), `batch` (the quiet period is over), `loop`
(the event loop has it), `planned`, `status` (the `building` status is on disk) and
`spawned` (the command's process exists): `scripts/bench.py` reads these lines to show
where a save's latency goes. A line costs nothing below `-vv`.
"""

from __future__ import annotations

import time

from loguru import logger


def mark(step: str, what: object = "") -> None:
    logger.trace("timeline {:.6f} {} {}", time.time(), step, what)
