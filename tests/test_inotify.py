"""Running out of inotify (issue 13 §2, issue 9 §2), with the real daemon and real limits.

Each daemon runs in a user namespace of its own (`unshare --user --map-root-user`) whose
inotify limits are lowered there: the kernel gives the same errors as the global sysctls,
and nothing outside the namespace is touched. Under CI=true a machine that cannot make one
fails these tests instead of skipping them.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.daemon_harness import Watcher, Watchers
from tests.helpers.tree import Tree, q
from tests.test_daemon import cheap, tree, wait_done, watchers

__all__ = ["tree", "watchers"]  # fixtures, shared with test_daemon


def _userns_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = "echo 10 > /proc/sys/user/max_inotify_watches"
    try:
        done = subprocess.run(
            ["unshare", "--user", "--map-root-user", "sh", "-c", probe],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.fixture(scope="module", autouse=True)
def user_namespace() -> None:
    if _userns_works():
        return
    message = "cannot create a user namespace with its own inotify limits (unshare --user)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def limited(**limits: int) -> tuple[str, ...]:
    """A prefix that runs the daemon in a user namespace with these inotify limits."""
    sets = "; ".join(f"echo {v} > /proc/sys/user/max_inotify_{k}" for k, v in limits.items())
    return ("unshare", "--user", "--map-root-user", "sh", "-c", f'{sets}; exec "$@"', "sh")


def image_with_folders(tree: Tree, count: int) -> None:
    """One image whose build folder holds `count` folders, a source in each."""
    for i in range(count):
        (tree.root / "img" / f"d{i}").mkdir(parents=True)
        (tree.root / "img" / f"d{i}" / "src.txt").write_text("v1")
    script = f"echo $$ >> {q(tree.out / 'pids')}; cat d*/src.txt | sort -u > /dev/null"
    tree.spec("img/img.yaml", cheap(tree, "img", script))


def save_and_see_it_built(tree: Tree, daemon: Watcher, rel: str) -> None:
    spec = tree.root / "img" / "img.yaml"
    wait_done(spec, "img")
    (tree.root / "img" / rel).write_text("v2")
    done = wait_done(spec, "img", lambda done: rel in done.get("reason", ""))
    assert "error" not in done["completed"]
    assert "Traceback" not in daemon.output()


def test_out_of_watches_at_start_polls_and_sees_every_save(tree: Tree, watchers: Watchers) -> None:
    """80 folders, 40 watches: 40 folders were watched, saves in the rest never seen."""
    image_with_folders(tree, 80)
    daemon = watchers.start(tree.root, prefix=limited(watches=40))

    daemon.wait_log("out of inotify watches (fs.inotify.max_user_watches)")
    daemon.wait_log("by polling")
    assert "sysctl -w fs.inotify.max_user_watches=" in daemon.output()
    save_and_see_it_built(tree, daemon, "d79/src.txt")


def test_out_of_watches_while_the_tree_grows_polls_and_sees_saves_in_new_folders(
    tree: Tree, watchers: Watchers
) -> None:
    """83 folders grow to 103 with a limit of 100: the new watcher got 17 watches, and once
    the old one retired 17 of 103 folders were watched."""
    image_with_folders(tree, 81)
    daemon = watchers.start(tree.root, prefix=limited(watches=100))
    wait_done(tree.root / "img" / "img.yaml", "img")
    assert "out of inotify" not in daemon.output()

    for i in range(20):
        (tree.root / "img" / f"n{i}").mkdir()
    daemon.wait_log("out of inotify watches (fs.inotify.max_user_watches)")
    save_and_see_it_built(tree, daemon, "n19/src.txt")
    save_and_see_it_built(tree, daemon, "d3/src.txt")


def test_no_inotify_instance_left_polls_instead_of_dying(tree: Tree, watchers: Watchers) -> None:
    image_with_folders(tree, 3)
    daemon = watchers.start(tree.root, prefix=limited(instances=0))

    daemon.wait_log("out of inotify instances (fs.inotify.max_user_instances)")
    save_and_see_it_built(tree, daemon, "d2/src.txt")
    assert daemon.proc.poll() is None


def test_poll_says_at_start_that_it_polls(tree: Tree, watchers: Watchers) -> None:
    image_with_folders(tree, 1)
    daemon = watchers.start(tree.root, "--poll")
    daemon.wait_log(f"watching {tree.root} by polling")
