"""The registry cache (SPEC §9): a build shared under its inputs digest, and reused in place
of a build on any clone whose inputs hash the same.

Sharing pushes the built image as `REPO:in-<16 hex of the inputs digest>` (REPO: `spec.ref`
under the Cluster's registry). For a ref the script chose (`outputsImageRefTo`) a note
follows, `REPO:rf-<the same hex>`: an image of one empty layer whose labels name that ref
and the image's id. Reusing looks the `in-` tag up for the engine's platform, pulls it, and
leaves in the engine what the build would have: the content tag (or the script's ref, its
file written again), and `REF:TAG` for `outputTag`. No `in-` or `rf-` tag stays behind in
either engine. `builder` calls it; every failure is a BuildError or RefError for it to log.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loguru import logger

from cmdimage_watch import refs
from cmdimage_watch.buildenv import (
    BuildError,
    BuildRequest,
    BuildResult,
    Expected,
    content_refs,
    needs_push,
)

if TYPE_CHECKING:
    from cmdimage_watch.engine import Engines

SCRIPT_REF = "dev.cmdimage-watch.ref"  # the labels of a note beside a script's image
IMAGE_ID = "dev.cmdimage-watch.image-id"


@dataclass
class RegistryCache:
    engines: Engines

    def share(self, request: BuildRequest, exp: Expected, host: str, result: BuildResult) -> None:
        """Push `result` (the build of `request`'s inputs) under its inputs tag; a script's
        ref in a note after it, so that a note always names an image that is there."""
        assert exp.registry is not None
        cached = cache_ref(request, exp)
        note = note_ref(request, exp) if request.image.outputs_ref_to else None
        self.engines.tag(host, result.image_id, cached)
        try:
            self.engines.push(host, cached, exp.registry)
        finally:
            self._untag(host, cached)
        if note is not None:
            labels = {SCRIPT_REF: result.local_ref.familiar(), IMAGE_ID: result.image_id}
            self.engines.note(host, note, labels)
            try:
                self.engines.push(host, note, exp.registry)
            finally:
                self._untag(host, note)

    def reuse(self, request: BuildRequest, exp: Expected, host: str) -> BuildResult | None:
        """The build of these inputs from the registry, pulled and tagged as the build would
        have tagged it; None, with a log line saying why, when the registry has none."""
        image, cached = request.image, cache_ref(request, exp)
        found = self.engines.in_registry(host, cached)
        if found != "yes":
            logger.info("{}: {} {}; building", image.name, cached.familiar(), found)
            return None
        if image.outputs_ref_to:
            labels = self.engines.read_note(host, note_ref(request, exp))
            if SCRIPT_REF not in labels:
                why = "is not in the registry cache; building"
                logger.info("{}: {} {}", image.name, note_ref(request, exp).familiar(), why)
                return None
        image_id = self.engines.pull(host, cached)
        try:  # the `in-` tag taken off again once the image has the tags of its build
            if image.outputs_ref_to:
                return self._as_script_ref(request, exp, host, image_id, labels)
            return self._as_built(request, exp, host, image_id)
        finally:
            self._untag(host, cached)

    def _as_built(
        self, request: BuildRequest, exp: Expected, host: str, image_id: str
    ) -> BuildResult:
        local, cluster = content_refs(request, exp, image_id)
        self.engines.tag(host, image_id, local)
        if request.image.spec.output_tag:  # the tag the command would have left in the engine
            assert exp.ref is not None
            self.engines.tag(host, image_id, exp.ref)
        return BuildResult(local, cluster, reused=True, image_id=image_id)

    def _as_script_ref(
        self,
        request: BuildRequest,
        exp: Expected,
        host: str,
        image_id: str,
        labels: dict[str, str],
    ) -> BuildResult | None:
        """outputsImageRefTo: the image tagged with the ref its note names, pushed there as
        a build would push it, and that ref written to its file, as the script wrote it."""
        image = request.image
        assert image.outputs_ref_to is not None
        if labels.get(IMAGE_ID) != image_id:  # two clones shared these inputs at once
            note = note_ref(request, exp).familiar()
            logger.info("{}: {} names another image; building", image.name, note)
            return None
        written = refs.parse_tagged_ref(labels[SCRIPT_REF])
        self.engines.tag(host, image_id, written)
        push_script_ref(self.engines, request, exp, host, written)
        image.outputs_ref_to.write_text(written.familiar() + "\n", "utf-8")
        cluster = refs.in_cluster(written, exp.registry)
        return BuildResult(written, cluster, reused=True, image_id=image_id)

    def _untag(self, host: str, ref: refs.Ref) -> None:
        with contextlib.suppress(BuildError):  # a tag left behind harms no build
            self.engines.untag(host, ref)


def push_script_ref(
    engines: Engines, request: BuildRequest, exp: Expected, host: str, ref: refs.Ref
) -> None:
    """Push the ref a script wrote when its image is pushed and the ref is under the
    Cluster's registry: never to a registry the Cluster did not name."""
    registry = exp.registry
    if needs_push(request) and registry is not None and refs.under_registry(ref, registry):
        engines.push(host, ref, registry)


def cache_ref(request: BuildRequest, exp: Expected) -> refs.Ref:
    """Where the registry cache keeps the build of these inputs: `REPO:in-<16 hex>`."""
    return _keyed(request, exp, "in")


def note_ref(request: BuildRequest, exp: Expected) -> refs.Ref:
    """Where it keeps the ref a script chose: `REPO:rf-<16 hex>`, as long as the `in-` tag
    (so that a registry's `singleName` limit fits both or neither)."""
    return _keyed(request, exp, "rf")


def _keyed(request: BuildRequest, exp: Expected, kind: str) -> refs.Ref:
    tag = refs.build_tag(request.image.ref, exp.registry, f"{kind}-{request.cache_key}")
    return refs.local_name(request.image.ref, exp.registry).with_tag(tag)
