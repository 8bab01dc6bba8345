"""Cluster settings refused as Tilt refuses them, shown where a user looks: `validate` (every
problem at its field), the Cluster's status, and the waiting reason of each CmdImage of that
cluster, whose command never runs until the Cluster is fixed.

Real processes on real files. The images use `outputMode: remote`, so no engine is needed:
what is tested is that nothing runs, and that it runs once the Cluster is fixed.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.daemon_harness import Watchers, cli, completed, status_of
from tests.helpers import cluster, cmdimage
from tests.helpers.polling import wait_until
from tests.helpers.tree import Tree

MISSING_HOST = "Required value: the registry host that images are pushed to"
LONG_NAME = "o" * 230  # fits alone; under gcr.io/somewhat/long/hostname/ it is 260 characters


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    made = Tree(tmp_path / "tree", tmp_path / "out", f"ciw-cluster-{uuid.uuid4().hex[:10]}")
    made.root.mkdir()
    made.out.mkdir()
    return made


def remote_image(tree: Tree, name: str, cluster_name: str, ref: str | None = None) -> str:
    script = tree.record(name)
    args = ["sh", "-c", script]
    return cmdimage(
        name, ref or f"{tree.uid}-{name}", args=args, outputMode="remote", cluster=cluster_name
    )


def waiting_reason(spec: Path, name: str) -> str:
    reason: str = status_of(spec, "CmdImage", name).get("waiting", {}).get("reason", "")
    return reason


def test_an_invalid_cluster_holds_its_images_until_it_is_fixed(
    tree: Tree, watchers: Watchers
) -> None:
    clusters = tree.spec("cluster.yaml", cluster("dev", defaultRegistry={"singleName": "app"}))
    spec = tree.spec("app/app.yaml", remote_image(tree, "app", "dev"))
    daemon = watchers.start(tree.root)

    reason = wait_until(lambda: waiting_reason(spec, "app"), "app to wait for its cluster")
    assert reason.startswith(f"waiting for cluster dev: invalid spec: {clusters}:")
    assert f"spec.defaultRegistry.host: {MISSING_HOST}" in reason
    cluster_status = status_of(clusters, "Cluster", "dev")
    assert cluster_status["waiting"]["reason"].startswith(f"invalid spec: {clusters}:")
    time.sleep(0.5)  # ten quiet periods: a command that was going to run has run
    assert tree.lines() == []

    clusters.write_text(cluster("dev", defaultRegistry={"host": "localhost:5000"}) + "\n")

    wait_until(lambda: completed(spec, "app"), "app to build once its cluster is fixed")
    assert tree.lines() == ["app"]
    assert status_of(spec, "CmdImage", "app")["ref"].startswith("localhost:5000/")
    assert "waiting" not in status_of(clusters, "Cluster", "dev")
    assert [p for p in daemon.problems() if "invalid spec" not in p] == []


def test_validate_lists_every_problem_at_its_field_in_file_order(
    tree: Tree, env: dict[str, str]
) -> None:
    clusters = tree.spec(
        "clusters.yaml",
        cluster("nohost", defaultRegistry={"hostFromContainerRuntime": "registry:5000"}),
        cluster(
            "bad", defaultRegistry={"host": "invalid", "hostFromContainerRuntime": "foo/bar/baz"}
        ),
        cluster("long", defaultRegistry={"host": "gcr.io/somewhat/long/hostname"}),
    )
    images = tree.root / "images.yaml"
    images.write_text(
        "apiVersion: tilt.dev/v1alpha1\n"
        "kind: CmdImage\n"
        "metadata: {name: two}\n"
        "spec:\n"
        "  ref: Two\n"  # line 5
        "  args: []\n"  # line 6
        "---\n"
        "apiVersion: tilt.dev/v1alpha1\n"
        "kind: CmdImage\n"
        "metadata: {name: far}\n"
        "spec:\n"
        f"  ref: {LONG_NAME}\n"  # line 12
        "  args: [x]\n"
        "  cluster: long\n"
        "---\n"
        "apiVersion: tilt.dev/v1alpha1\n"
        "kind: CmdImage\n"
        "metadata: {name: lost}\n"
        "spec:\n"
        "  ref: lost\n"
        "  args: [x]\n"
        "  cluster: nosuch\n"  # line 22
    )

    result = cli("validate", tree.root, env=env)

    assert result.returncode == 1
    lines = result.stdout.splitlines()
    canonical = 'repository name must be canonical (a registry host needs a "." or a ":port"'
    assert lines[:3] == [
        f"{clusters}:1:{_col(clusters, 1, 'defaultRegistry')}: spec.defaultRegistry.host: "
        f"{MISSING_HOST} (such as localhost:5000); hostFromContainerRuntime and singleName "
        "only add to it",
        f"{clusters}:3:{_col(clusters, 3, 'host')}: spec.defaultRegistry.host: "
        f'Invalid value: "invalid": {canonical}, or is "localhost")',
        f"{clusters}:3:{_col(clusters, 3, 'hostFromContainerRuntime')}: "
        f'spec.defaultRegistry.hostFromContainerRuntime: Invalid value: "foo/bar/baz": '
        f'{canonical}, or is "localhost")',
    ]
    assert lines[3:] == [
        f"{images}:5:3: spec.ref: invalid reference format: repository name (library/Two) "
        "must be lowercase",
        f"{images}:6:3: spec.args: List should have at least 1 item after validation, not 0",
        f"{images}:12:3: spec.ref: Error parsing gcr.io/somewhat/long/hostname/{LONG_NAME} "
        "after applying default registry gcr.io/somewhat/long/hostname: repository name must "
        "not be more than 255 characters (it is 260)",
        f"{images}:22:3: spec.cluster: no Cluster named nosuch",
        "7 error(s) in 6 object(s) of 2 file(s)",
    ]


def _col(path: Path, line: int, key: str) -> int:
    """The 1-based column of `"key"` on `line` of a spec file the helpers wrote as JSON."""
    return path.read_text().splitlines()[line - 1].index(f'"{key}"') + 1


def test_a_ref_too_long_under_the_registry_waits_and_runs_nothing(
    tree: Tree, env: dict[str, str]
) -> None:
    tree.spec(
        "cluster.yaml", cluster("long", defaultRegistry={"host": "gcr.io/somewhat/long/hostname"})
    )
    spec = tree.spec("far/far.yaml", remote_image(tree, "far", "long", ref=LONG_NAME))

    result = cli("build", tree.root, env=env)

    assert result.returncode == 1
    reason = waiting_reason(spec, "far")
    assert reason.startswith("waiting for cluster long: spec.ref: Error parsing gcr.io/")
    assert reason.endswith("repository name must not be more than 255 characters (it is 260)")
    assert tree.lines() == []
