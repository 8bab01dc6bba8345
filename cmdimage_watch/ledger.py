"""What is known of each image's builds, one table per meaning.

`status.State` is what the status files show (and what a start reads back): each image's
status, the digest of its last good build (`digests`) and of the failure it shows
(`failed`). Beside it, this run's own memory: the inputs of each last good build, the
failures not to retry, the images confirmed, the plans put off. `reconcile` writes it;
`scheduler`, `triggers` and `daemon` read it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from cmdimage_watch import models, status
from cmdimage_watch.sources import Inputs


@dataclass(frozen=True)
class Failure:
    """A build that failed in this run: the digest of its inputs and the status it showed."""

    digest: str
    shown: models.CmdImageStatus


@dataclass
class Ledger:
    state: status.State = field(default_factory=status.State)
    good_inputs: dict[str, Inputs] = field(default_factory=dict)  # of each last good build
    refused: dict[str, Failure] = field(default_factory=dict)  # not retried with these inputs
    confirmed: set[str] = field(default_factory=set)  # built or found up to date by this run
    deferred: dict[str, bool] = field(default_factory=dict)  # spec file gone: name -> forced
    unreachable: dict[str, str] = field(default_factory=dict)  # name -> engine that was down
    reasons: dict[str, str] = field(default_factory=dict)  # name -> its next build's reason

    def good_digest(self, name: str) -> str | None:
        """The inputs digest of `name`'s last good build (this run's or a status file's)."""
        return self.state.digests.get(name)

    def refusal(self, name: str, digest: str) -> Failure | None:
        """This run's failure of `name` with exactly these inputs, if there is one."""
        found = self.refused.get(name)
        return found if found is not None and found.digest == digest else None

    def succeeded(
        self, name: str, inputs: Inputs, publishes: str, published: models.ImageMapStatus
    ) -> None:
        self.confirmed.add(name)
        self.refused.pop(name, None)
        self.state.failed.pop(name, None)
        self.state.digests[name] = inputs.digest()
        self.good_inputs[name] = inputs
        self.state.image_maps[publishes] = published

    def failed(self, name: str, digest: str, shown: models.CmdImageStatus) -> None:
        self.refused[name] = Failure(digest, shown)
        self.state.failed[name] = digest

    def engine_back(self, address: str) -> list[str]:
        """The engine at `address` answers again: the images that failed or waited only
        because it did not are tried again, their next build saying why."""
        names = sorted(n for n, a in self.unreachable.items() if a == address)
        for name in names:
            del self.unreachable[name]
            self.refused.pop(name, None)
            self.reasons[name] = f"engine at {address} is back"
        return names

    def defer(self, name: str, force: bool) -> None:
        """Put off `name`'s plan until its spec file is back; a trigger meanwhile is kept."""
        self.deferred[name] = force or self.deferred.get(name, False)

    def resume(self, names: Iterable[str]) -> dict[str, bool]:
        """Take these images off the deferred list; whether each was forced."""
        return {name: self.deferred.pop(name) for name in names if name in self.deferred}

    def forget(self, name: str, publishes: str) -> None:
        """Drop what is known of an image whose spec is gone."""
        tables = (self.state.images, self.state.digests, self.state.failed, self.good_inputs)
        for table in (*tables, self.refused, self.deferred, self.unreachable, self.reasons):
            table.pop(name, None)
        self.confirmed.discard(name)
        self.state.image_maps.pop(publishes, None)
