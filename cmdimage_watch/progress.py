"""Whether an image is done, for `wait`: its status file against the inputs it has now.

A status alone cannot tell a finished build from one whose save the daemon has not seen
yet, so `wait` also computes the image's inputs digest, as the daemon would, and takes an
image as done only when its status records a build (or a failure) of exactly those inputs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from cmdimage_watch import project
from cmdimage_watch.builder import Builder
from cmdimage_watch.hashes import Hashes
from cmdimage_watch.ledger import Ledger
from cmdimage_watch.reconcile import Reconciler
from cmdimage_watch.scheduler import with_deps
from cmdimage_watch.settings import Settings, state_file_name
from cmdimage_watch.sources import HashCache
from cmdimage_watch.speccache import SpecCache
from cmdimage_watch.statusfiles import StatusCache

PENDING = "pending"


@dataclass
class Progress:
    settings: Settings
    cache: HashCache = field(default_factory=HashCache)  # kept across polls: hashes lazily
    specs: SpecCache | None = None  # parsed specs by content: a poll parses what changed

    def __post_init__(self) -> None:
        if self.specs is None:  # read, never written: `wait` leaves the state folder alone
            self.specs = SpecCache(self.settings.state_dir / "specs.json")
        self.statuses = StatusCache(self.settings.state_dir / "statuses.json")  # as well

    def check(self, names: list[str]) -> dict[str, str]:
        """Each image's outcome: PENDING, "" (built from its current inputs), or its error."""
        index = project.load(self.settings.root, self.specs)
        state, _ = project.read_state(index, self.settings.state_dir, self.statuses)
        builder = Builder(self.settings.log_dir)
        reconciler = Reconciler(index, builder, self.settings, Ledger(state), Hashes(self.cache))
        outcomes: dict[str, str] = {}
        for name in names:  # an image is done only when all it is built from is done too
            needs = sorted(with_deps(index, [name]) - {name})
            for need in needs:
                if need not in outcomes:
                    outcomes[need] = asyncio.run(self._outcome(reconciler, need))
            pending = any(outcomes[need] == PENDING for need in needs)
            outcome = PENDING if pending else asyncio.run(self._outcome(reconciler, name))
            outcomes[name] = outcome
        return {name: outcomes[name] for name in names}

    async def _outcome(self, reconciler: Reconciler, name: str) -> str:
        index, state = reconciler.index, reconciler.state
        if name not in index.images:
            entries = [e for f in index.files.values() for e in f.entries if e.name == name]
            return index.problem(entries[0]) if entries else f"no CmdImage named {name} now"
        value = state.images.get(name)
        trigger = self.settings.state_dir / "triggers" / state_file_name(name)
        if value is None or value.completed is None or value.building or trigger.exists():
            return PENDING
        inputs = await reconciler.inputs_of(name)
        if inputs is None:
            return PENDING  # waiting for an image map or a cluster
        digest, done = inputs.digest(), value.completed
        if done.error:
            return done.error if state.failed.get(name) == digest else PENDING
        return "" if state.digests.get(name) == digest else PENDING
