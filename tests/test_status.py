"""Status constructors and the documents of a status file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cmdimage_watch import status
from cmdimage_watch.specfiles import SpecFile
from tests.helpers import cmdimage, imagemap, index_of, write

T0 = datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=UTC)
T1 = datetime(2026, 11, 26, 12, 0, 5, tzinfo=UTC)


def test_constructors_dump_in_tilts_shape_with_microsecond_utc_times() -> None:
    assert status.dump(status.waiting("waiting for image map base")) == {
        "waiting": {"reason": "waiting for image map base"}
    }
    assert status.dump(status.building("initial build", T0)) == {
        "building": {"reason": "initial build", "startedAt": "2026-11-26T12:00:00.123456Z"}
    }
    assert status.dump(status.succeeded("app:tilt-1", "spec changed", T0, T1)) == {
        "ref": "app:tilt-1",
        "completed": {
            "reason": "spec changed",
            "startedAt": "2026-11-26T12:00:00.123456Z",
            "finishedAt": "2026-11-26T12:00:05.000000Z",
        },
    }
    failed = status.dump(status.failed("boom", "manual trigger", T0, T1))
    assert "ref" not in failed
    assert failed["completed"]["error"] == "boom"


def test_documents_follow_file_order_and_add_the_published_map(tmp_path: Path) -> None:
    spec = write(
        tmp_path / "a.yaml",
        cmdimage("app", "gcr.io/me/app", imageMaps=["base"]),
        imagemap("base", status={"image": "base:1", "imageFromLocal": "base:1"}),
    )
    index = index_of(spec)
    state = status.State()
    state.images["app"] = status.succeeded("gcr.io/me/app:tilt-1", "initial build", T0, T1)
    state.digests["app"] = "sha256:abc"
    state.image_maps["gcr.io_me_app"] = status.published("loc/app:tilt-1", "clu/app:tilt-1", T0)
    docs = status.documents(index.files[spec], index, state)
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("CmdImage", "app"),
        ("ImageMap", "base"),
        ("ImageMap", "gcr.io_me_app"),
    ]
    assert docs[0]["metadata"]["annotations"] == {status.INPUTS_DIGEST: "sha256:abc"}
    assert docs[1]["status"] == {"image": "base:1", "imageFromLocal": "base:1"}
    assert docs[2]["status"] == {
        "image": "clu/app:tilt-1",
        "imageFromLocal": "loc/app:tilt-1",
        "imageFromCluster": "clu/app:tilt-1",
        "buildStartTime": "2026-11-26T12:00:00.123456Z",
    }


def test_invalid_objects_and_unreadable_files_get_their_error(tmp_path: Path) -> None:
    spec = write(tmp_path / "a.yaml", cmdimage("good"), cmdimage("bad", args=[]))
    index = index_of(spec)
    broken = SpecFile(spec, index.files[spec].entries, error=f"{spec}:3:1: mapping values")
    docs = status.documents(broken, index, status.State())
    reason = docs[1]["status"]["waiting"]["reason"]
    assert reason.startswith(f"invalid spec: {spec}:")
    assert reason.endswith("spec.args: List should have at least 1 item after validation, not 0")
    assert docs[-1] == {
        "apiVersion": "cmdimage-watch.dev/v1",
        "kind": "SpecFileError",
        "metadata": {"name": "a.yaml"},
        "error": f"{spec}:3:1: mapping values",
    }


def test_a_hand_written_map_status_resolves_only_without_our_own_build(tmp_path: Path) -> None:
    spec = write(tmp_path / "a.yaml", imagemap("ext", status={"image": "ext:1"}), imagemap("x"))
    index = index_of(spec)
    state = status.State()
    found = status.image_map_status("ext", index, state)
    assert found is not None
    assert found.image == "ext:1"
    assert status.image_map_status("x", index, state) is None
    state.image_maps["ext"] = status.published("ext:ours", "ext:ours", T0)
    assert status.image_map_status("ext", index, state) == state.image_maps["ext"]


def test_a_file_watch_keeps_its_last_twenty_events_as_tilt_does() -> None:
    t0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    watch = None
    for second in range(25):
        watch = status.file_event(watch, t0.replace(second=second), [f"/src/{second}.txt"])
    assert watch is not None
    assert watch.monitor_start_time == t0
    assert [e.seen_files for e in watch.file_events] == [[f"/src/{n}.txt"] for n in range(5, 25)]
    assert watch.last_event_time == t0.replace(second=24)


def test_a_failure_s_error_is_bounded_and_says_where_the_rest_is() -> None:
    at = datetime(2024, 5, 2, tzinfo=UTC)
    long = status.failed("e" * 10_000, "spec changed", at, at).completed
    assert long is not None
    assert (
        long.error == "e" * status.ERROR_MAX + "… (cut: 10000 characters; the build log has it all)"
    )
    short = status.failed("boom", "spec changed", at, at).completed
    assert short is not None and short.error == "boom"
