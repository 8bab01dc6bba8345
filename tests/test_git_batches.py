"""Git-aware batches (SPEC §9), with real git on a real repository and the real daemon.

A checkout or stash of hundreds of files is one batch: each image builds at most once, in
dependency order, with the operation as its cause. The daemon runs with `--debounce-max
0.05`, so that without the hold such an operation would be cut into several batches (as a
slow disk or a big checkout cuts it with the defaults), and dependents would build twice.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_harness import Watcher, Watchers, completed
from tests.helpers import cmdimage
from tests.helpers.polling import wait_until
from tests.helpers.tree import Tree

FILES = 600  # per image: a checkout of 1,200 files takes long enough to cross batches


def git(tree: Tree, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=tree.root,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    made = Tree(tmp_path / "tree", tmp_path / "out", f"ciw-git-{uuid.uuid4().hex[:10]}").make()
    for name in ("base", "app"):
        maps = {"imageMaps": [f"{made.uid}-base"]} if name == "app" else {}
        doc = cmdimage(
            name,
            f"{made.uid}-{name}",
            args=["sh", "-c", made.record(name)],
            outputMode="remote",
            **maps,
        )
        made.spec(f"{name}/{name}.yaml", doc)
        write_sources(made, name, "v1")
    (made.root / ".gitignore").write_text(".cmdimage-watch/\n*.status.yaml\n")
    git(made, "init", "-q", "-b", "main")
    git(made, "add", "-A")
    git(made, "commit", "-q", "-m", "v1")
    return made


def write_sources(tree: Tree, name: str, content: str) -> None:
    folder = tree.root / name / "src"
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(FILES):
        (folder / f"f{n:04}.txt").write_text(f"{content} {n}\n")


@pytest.fixture
def daemon(tree: Tree, watchers: Watchers) -> Iterator[Watcher]:
    started = watchers.start(tree.root, "--debounce", "0.02", "--debounce-max", "0.05")
    for name in ("base", "app"):
        wait_until(lambda: completed(tree.root / name / f"{name}.yaml", name), f"{name} built")  # noqa: B023
    started.settle()
    assert tree.lines() == ["base", "app"]
    yield started


def feature_branch(tree: Tree) -> None:
    """Branch `feature`, checked out, with every source of both images changed."""
    git(tree, "checkout", "-q", "-b", "feature")
    for name in ("base", "app"):
        write_sources(tree, name, "v2")
    git(tree, "commit", "-q", "-am", "v2")


def reason(tree: Tree, name: str) -> str:
    return str(completed(tree.root / name / f"{name}.yaml", name)["reason"])


def test_a_checkout_builds_each_image_once_in_order_with_the_checkout_as_cause(
    tree: Tree, daemon: Watcher
) -> None:
    feature_branch(tree)
    daemon.settle()
    assert tree.lines() == ["base", "app"] * 2  # committing changes no file

    git(tree, "checkout", "-q", "main")
    daemon.settle()

    assert tree.lines()[4:] == ["base", "app"]
    assert reason(tree, "base") == f"git checkout: {2 * FILES} files"
    assert "git is working in" in daemon.output()


def test_a_stash_is_one_batch_too(tree: Tree, daemon: Watcher) -> None:
    for name in ("base", "app"):
        write_sources(tree, name, "edited")
    daemon.settle()
    assert tree.lines()[2:] == ["base", "app"]

    git(tree, "stash", "-q")
    daemon.settle()

    assert tree.lines()[4:] == ["base", "app"]
    assert reason(tree, "base") == f"git stash: {2 * FILES} files"


def test_a_save_while_git_only_looks_is_built_with_its_own_cause(
    tree: Tree, daemon: Watcher
) -> None:
    """A lock that changed no ref (git status refreshing the index, as editors run it)
    holds the save a moment, and leaves its cause alone."""
    lock = tree.root / ".git" / "index.lock"
    lock.write_text("")
    (tree.root / "base" / "src" / "f0000.txt").write_text("saved\n")
    daemon.wait_log("git is working in")
    assert tree.lines() == ["base", "app"]  # held
    lock.unlink()
    daemon.settle()
    assert tree.lines()[2] == "base"  # app follows only if base's tilt-build-<second> moved
    assert reason(tree, "base") == "changed files: src/f0000.txt"


def test_a_pull_is_one_batch_named_pull(tree: Tree, daemon: Watcher, tmp_path: Path) -> None:
    """A teammate's commit fetched and fast-forwarded from another clone."""
    other = Tree(tmp_path / "other", tmp_path / "other-out", tree.uid)
    subprocess.run(["git", "clone", "-q", str(tree.root), str(other.root)], check=True)
    for name in ("base", "app"):
        write_sources(other, name, "theirs")
    git(other, "commit", "-q", "-am", "theirs")

    git(tree, "pull", "-q", "--ff-only", str(other.root), "main")
    daemon.settle()

    assert tree.lines()[2:] == ["base", "app"]
    assert reason(tree, "base") == f"git pull: {2 * FILES} files"


def test_a_lock_a_crashed_git_left_holds_nothing(tree: Tree, daemon: Watcher) -> None:
    lock = tree.root / ".git" / "index.lock"
    lock.write_text("")
    os.utime(lock, (time.time() - 60, time.time() - 60))
    (tree.root / "base" / "src" / "f0000.txt").write_text("saved\n")
    daemon.wait_log("index.lock is 60 s old: a git that crashed left it")
    daemon.settle()
    assert tree.lines()[2] == "base"
    (tree.root / "base" / "src" / "f0001.txt").write_text("saved again\n")
    daemon.settle()  # the same lock: not held again, not warned of again
    assert tree.lines().count("base") == 3
    assert daemon.output().count("a git that crashed left it") == 1


def test_a_commit_names_neither_the_next_save_nor_the_next_checkout(
    tree: Tree, watchers: Watchers
) -> None:
    feature_branch(tree)
    git(tree, "checkout", "-q", "main")
    daemon = watchers.start(tree.root, "--debounce", "0.02", "--debounce-max", "0.05")
    wait_until(lambda: len(tree.lines()) == 2, "the first builds")
    daemon.settle()

    git(tree, "commit", "-q", "--allow-empty", "-m", "nothing")  # moves HEAD, no file
    (tree.root / "base" / "src" / "f0000.txt").write_text("saved\n")
    daemon.settle()
    assert reason(tree, "base") == "changed files: src/f0000.txt"

    before = len(tree.lines())  # app follows the save only if base's tag's second moved
    git(tree, "checkout", "-q", "-f", "feature")  # and a commit right after it
    git(tree, "commit", "-q", "--allow-empty", "-m", "again")
    daemon.settle()
    assert reason(tree, "base") == f"git checkout: {2 * FILES} files"
    assert tree.lines()[before:] == ["base", "app"]


def test_a_rebase_is_one_batch_named_rebase(tree: Tree, daemon: Watcher) -> None:
    """feature changes the base, main the app; rebasing feature onto main rewrites both."""
    git(tree, "checkout", "-q", "-b", "feature")
    write_sources(tree, "base", "feature")
    git(tree, "commit", "-q", "-am", "feature")
    git(tree, "checkout", "-q", "main")
    write_sources(tree, "app", "main")
    git(tree, "commit", "-q", "-am", "main")
    daemon.settle()
    before = len(tree.lines())

    git(tree, "rebase", "-q", "feature", "main")  # main's commit replayed on feature
    daemon.settle()

    new = tree.lines()[before:]  # app follows if base's tilt-build-<second> moved
    assert new in (["base"], ["base", "app"])
    assert reason(tree, "base").startswith("git rebase: ")
