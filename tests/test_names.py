"""Names at the edge (SPEC §7): up to 253 characters, as Kubernetes allows, of any script,
and never a path the filesystem refuses: every state and log file of an image fits one
file name (255 bytes), whatever its name. Longer names and control characters are refused
in `validate`, at the field.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cmdimage_watch.settings import NAME_MAX, state_file_name
from cmdimage_watch.specfiles import load_spec_file
from tests.daemon_harness import Watchers, completed
from tests.daemon_harness import cli as daemon_cli
from tests.helpers import cmdimage, write
from tests.helpers.polling import wait_until
from tests.helpers.tree import Tree

ASCII = "a" * 253
UNICODE = "é" * 253  # 506 bytes: longer than a file name may be


@pytest.mark.parametrize("name", ["app", ASCII, UNICODE, "日本" * 100])
@pytest.mark.parametrize("suffix", ["", ".log", ".prev.log", ".json"])
def test_a_state_file_name_always_fits_and_short_ones_are_kept(name: str, suffix: str) -> None:
    found = state_file_name(name, suffix)
    assert len(found.encode()) <= NAME_MAX
    assert found.endswith(suffix)
    if len((name + suffix).encode()) <= NAME_MAX:
        assert found == name + suffix
    assert state_file_name(name[:-1] + "b", suffix) != found  # two names, two files


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a" * 254, "a name is at most 253 characters, as in Kubernetes; this one has 254"),
        ("a\nb", "'a\\nb' cannot be a name: no control characters"),
        ("tab\there", "cannot be a name: no control characters"),
    ],
)
def test_names_too_long_or_with_control_characters_are_refused_at_the_field(
    tmp_path: Path, name: str, message: str
) -> None:
    path = write(tmp_path / "x.yaml", cmdimage(name))
    (entry,) = load_spec_file(path).entries
    assert entry.obj is None
    assert entry.problems[0].startswith(f"{path}:1:")
    assert ": metadata.name: " in entry.problems[0]
    assert message in entry.problems[0]


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cmdimage_watch", *args]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=60)


def test_images_with_the_longest_names_build_and_log_for_real(tmp_path: Path) -> None:
    for name in (ASCII, UNICODE):
        folder = tmp_path / ("ascii" if name == ASCII else "unicode")
        args = ["sh", "-c", "echo built"]
        write(
            folder / "x.yaml",
            cmdimage(name, "x" if name == ASCII else "y", args=args, outputMode="remote"),
        )

    for _ in range(2):  # the second run rotates each log to .prev.log
        built = cli(tmp_path, "build", ".", "--force")
        assert built.returncode == 0, built.stderr
    assert cli(tmp_path, "validate", ".").returncode == 0

    logs = sorted(p.name for p in (tmp_path / ".cmdimage-watch" / "logs").iterdir())
    assert len(logs) == 4  # .log and .prev.log of each
    assert all(len(n.encode()) <= NAME_MAX for n in logs)
    assert state_file_name(ASCII, ".log") in logs  # 257 bytes as it is: cut, with a hash
    inputs = list((tmp_path / ".cmdimage-watch" / "inputs").iterdir())
    assert len(inputs) == 2
    log = tmp_path / ".cmdimage-watch" / "logs" / state_file_name(UNICODE, ".log")
    assert "built" in log.read_text()


def test_trigger_and_wait_work_for_a_name_too_long_for_a_file_name(
    tmp_path: Path, env: dict[str, str]
) -> None:
    tree = Tree(tmp_path / "tree", tmp_path / "out", "ciw-names").make()
    spec = tree.spec(
        "x.yaml", cmdimage(UNICODE, "z", args=["sh", "-c", tree.record("run")], outputMode="remote")
    )
    watchers = Watchers(tmp_path / "logs", env)
    try:
        watchers.start(tree.root)
        wait_until(lambda: tree.lines() == ["run"], "the first build")
        triggered = daemon_cli("trigger", tree.root, UNICODE, env=env)
        assert triggered.returncode == 0, triggered.stderr
        wait_until(lambda: tree.lines() == ["run", "run"], "the triggered build")
        waited = daemon_cli("wait", tree.root, UNICODE, "--timeout", "30", env=env)
        assert waited.returncode == 0, waited.stderr
        assert completed(spec, UNICODE)["reason"] == "manual trigger"
    finally:
        watchers.stop_all()
