"""The README's walk-through, replayed as written on a copy of the checkout.

`scripts/walkthrough.py` runs every `$ command` of the section and matches what it prints
against the README (`…` for anything). Real daemon, real engine and registry, real files.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scripts import walkthrough

REPO = Path(__file__).resolve().parent.parent


def test_the_walkthrough_parses_into_steps_with_their_output() -> None:
    steps = walkthrough.steps((REPO / "README.md").read_text(encoding="utf-8"))
    commands = [s.command for s in steps]
    assert commands[0] == "scripts/dev watch sample-project"
    assert "scripts/dev graph sample-project" in commands
    shown = {s.command: s.expected for s in steps}
    assert shown["scripts/dev graph sample-project"][0] == "digraph images {"


@pytest.mark.parametrize(
    ("expected", "actual", "same"),
    [
        (["a  …  c"], ["a b  b c"], True),
        (["a …"], ["a"], False),  # "…" stands for something after a space
        (["x"], ["x", "y"], False),
        (["IMAGE  STATE"], ["IMAGE   STATE   "], True),
        (["tilt-…"], ["tilt-0123456789abcdef"], True),
        (["ok"], ["failed"], False),
    ],
)
def test_output_matching(expected: list[str], actual: list[str], same: bool) -> None:
    assert walkthrough.matches(expected, actual) is same


@pytest.mark.timeout(300)
def test_the_readme_walkthrough_gives_the_output_it_shows(docker_host: str) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "walkthrough.py")],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("steps, all matched")
