"""What a new user meets in the first hour (issue 13), with the real daemon and real signals.

A build that never finishes because the daemon's own log is one of its sources; a build that
writes into its own sources (a loop, named with the rule that ends it); a done image shown as
building until the slowest build ends; SIGTERM or SIGINT to a one-shot `build`; and build
processes that ignore SIGTERM, ended by a save (issue 9 §2; on the daemon's own end:
test_daemon's SIGTERM test).
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.daemon_harness import Watchers, status_of
from tests.helpers.polling import wait_until
from tests.helpers.processes import group_members
from tests.helpers.tree import Tree, q
from tests.test_daemon import (
    STUBBORN,
    cheap,
    image_dir,
    settled,
    sleeps,
    tree,
    wait_done,
    wait_lines,
    watchers,
)

__all__ = ["tree", "watchers"]  # fixtures, shared with test_daemon


# --- §1: the daemon's own output, and loops ------------------------------------------------


def test_the_daemon_s_own_log_in_the_build_folder_is_never_a_source(
    tree: Tree, watchers: Watchers
) -> None:
    """`watch . > daemon.log` with a spec beside its Dockerfile at the root: every log line
    used to cancel the build (77 restarts in 6 s, none finished)."""
    (tree.root / "src.txt").write_text("v1")
    script = f"echo $$ >> {q(tree.out / 'pids')}; sleep 1; {tree.record()}"
    spec = tree.spec("img.yaml", cheap(tree, "img", script))
    daemon = watchers.start(tree.root, log=tree.root / "daemon.log")

    assert wait_done(spec, "img")["completed"]["reason"] == "initial build"
    assert settled(tree) == ["v1"]
    assert len(tree.pids()) == 1
    assert f"{tree.root / 'daemon.log'} takes this daemon's output: never a source" in (
        daemon.output()
    )
    assert "cancelling" not in daemon.output()


def test_a_build_that_writes_its_own_source_is_named_as_a_loop_with_the_rule_that_ends_it(
    tree: Tree, watchers: Watchers
) -> None:
    folder = image_dir(tree, "img", "v1")
    script = f"date +%s%N > gen.txt; echo $$ >> {q(tree.out / 'pids')}; sleep 1; {tree.record()}"
    tree.spec("img/img.yaml", cheap(tree, "img", script))
    daemon = watchers.start(tree.root)

    daemon.wait_log("gen.txt changed during each of its last 3 builds")
    wait_lines(tree, 1)  # no longer restarted: it runs to its end (and the next one starts)
    out = daemon.output()
    assert (
        f"To stop it counting as a source, add the line gen.txt to {folder / '.dockerignore'}"
        in (out)
    )
    assert "inputs changed during the build (changed files: gen.txt)" in out
    assert out.count("cancelling it to start again") == 3

    (folder / ".dockerignore").write_text("gen.txt\n")  # the rule ends it
    (folder / "src.txt").write_text("v2")
    wait_until(lambda: "v2" in tree.lines(), "a build of v2")
    count = len(tree.pids())
    assert settled(tree)[-1] == "v2"
    assert len(tree.pids()) == count  # nothing more after it


# --- §1: statuses that wait for the slowest build ------------------------------------------


def test_a_done_image_shows_done_while_a_slow_build_reads_its_folder(
    tree: Tree, watchers: Watchers
) -> None:
    """`outer` builds the whole tree for a minute; `inner`, inside it, is done in a moment."""
    (tree.root / "src.txt").write_text("outer")
    outer = tree.spec("outer.yaml", cheap(tree, "outer", "sleep 60"))
    image_dir(tree, "sub", "inner")
    inner = tree.spec("sub/inner.yaml", cheap(tree, "inner", tree.record()))
    watchers.start(tree.root)

    done = wait_done(inner, "inner")
    assert done["completed"]["reason"] == "initial build"
    assert "building" in status_of(outer, "CmdImage", "outer")


def test_a_one_shot_build_writes_each_status_when_that_build_ends(
    tree: Tree, env: dict[str, str]
) -> None:
    (tree.root / "src.txt").write_text("outer")
    outer = tree.spec("outer.yaml", cheap(tree, "outer", "sleep 60"))
    image_dir(tree, "sub", "inner")
    inner = tree.spec("sub/inner.yaml", cheap(tree, "inner", tree.record()))
    proc = subprocess.Popen(
        [sys.executable, "-m", "cmdimage_watch", "build", str(tree.root)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_done(inner, "inner")
        assert "building" in status_of(outer, "CmdImage", "outer")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


# --- §1: signals to a one-shot build ------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_build_cancels_its_builds_and_their_stubborn_children(
    tree: Tree, env: dict[str, str], sig: signal.Signals
) -> None:
    image_dir(tree, "img", "v1")
    spec = tree.spec(
        "img/img.yaml", cheap(tree, "img", f"echo $$ >> {q(tree.out / 'pids')}; {STUBBORN}")
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "cmdimage_watch", "build", str(tree.root)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pgid = int(wait_lines(tree, 1, "pids")[0])
        wait_until(lambda: sleeps(pgid) >= 3, "three sleeps that ignore SIGTERM")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig
    assert f"stopped by {sig.name}; cancelled 1 build(s)" in err
    assert group_members(pgid) == []
    value = status_of(spec, "CmdImage", "img")
    assert value["completed"]["error"] == "build cancelled: cmdimage-watch was stopped"
    assert "building" not in value


# --- issue 9 §2: processes that ignore SIGTERM ----------------------------------------------


def test_a_save_ends_a_build_whose_children_ignore_sigterm(tree: Tree, watchers: Watchers) -> None:
    folder = image_dir(tree, "img", "v1")
    script = f'echo $$ >> {q(tree.out / "pids")}; [ "$(cat src.txt)" = v2 ] || {{ {STUBBORN}; }}'
    spec = tree.spec("img/img.yaml", cheap(tree, "img", f"{script}; {tree.record()}"))
    watchers.start(tree.root)
    pgid = int(wait_lines(tree, 1, "pids")[0])
    wait_until(lambda: sleeps(pgid) >= 3, "three sleeps that ignore SIGTERM")

    (folder / "src.txt").write_text("v2")

    wait_until(lambda: group_members(pgid) == [], "the first build's whole group to end")
    # the cancelled build's status comes first; then the new build's, without an error
    wait_done(spec, "img", lambda done: "error" not in done)
    assert tree.lines() == ["v2"]
