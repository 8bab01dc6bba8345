"""The command line's own rules: which argument is the tree, and bad usage exits 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from cmdimage_watch.cli import _dir_and_names
from tests.helpers import cmdimage, write


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tree with a folder `app` that holds the image `app`; the current folder is its root."""
    write(tmp_path / "app" / "app.yaml", cmdimage("app"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("args", "need_names", "expected"),
    [
        (["app"], True, (".", ["app"])),  # `trigger app`: one word is a name
        (["app", "web"], True, ("app", ["web"])),  # a folder, and a name follows
        (["./app"], False, ("app", [])),  # looks like a path: always the tree
        (["app/", "x"], True, ("app", ["x"])),
        ([".", "app"], True, (".", ["app"])),  # `.` forces the current folder
        (["web", "app"], True, (".", ["web", "app"])),  # not a folder: names
        ([], False, (".", [])),
    ],
)
def test_the_first_argument_is_the_tree_when_it_can_only_be_one(
    here: Path, args: list[str], need_names: bool, expected: tuple[str, list[str]]
) -> None:
    root, names = _dir_and_names(args, need_names)
    assert (str(root), names) == expected


def test_in_a_tree_already_used_a_bare_word_is_an_image_name(here: Path) -> None:
    (here / ".cmdimage-watch").mkdir()
    assert _dir_and_names(["app"], need_names=False) == (Path(), ["app"])
    assert _dir_and_names(["app", "web"], need_names=True) == (Path(), ["app", "web"])
    assert _dir_and_names(["app/"], need_names=False) == (Path("app"), [])


def test_a_lone_folder_name_for_build_in_a_tree_never_used_is_asked_about(
    here: Path,
) -> None:
    """`build app` where app/ is a folder and `.` was never a tree: the folder as a tree,
    or the image app? Neither guess is safe (one walks `.`, say a home folder; the other
    puts a state folder into app/), so it says how to write each."""
    with pytest.raises(typer.Exit) as exit_:
        _dir_and_names(["app"], need_names=False)
    assert exit_.value.exit_code == 2
    assert _dir_and_names(["app"], need_names=True) == (Path(), ["app"])  # `wait app`
    assert _dir_and_names(["web"], need_names=False) == (Path(), ["web"])  # no such folder


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout's root, as a newcomer has it: `sample/` holds the specs (its images have
    other names) and the checkout has YAML of its own that is no spec."""
    write(tmp_path / "sample" / "base" / "base.yaml", cmdimage("sample-base"))
    write(tmp_path / ".ci" / "config.yaml", "jobs: [test]")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("need_names", [False, True])
def test_a_folder_of_spec_files_named_like_no_image_of_dot_is_the_tree(
    checkout: Path, need_names: bool
) -> None:
    assert _dir_and_names(["sample", "sample-base"], need_names) == (
        Path("sample"),
        ["sample-base"],
    )
    assert _dir_and_names(["sample"], need_names=False) == (Path("sample"), [])
    (checkout / ".cmdimage-watch").mkdir()  # `.` used as a tree before changes nothing here
    assert _dir_and_names(["sample"], need_names=False) == (Path("sample"), [])


def test_a_folder_without_spec_files_is_a_name(checkout: Path) -> None:
    (checkout / "docs").mkdir()
    assert _dir_and_names(["docs"], need_names=False) == (Path(), ["docs"])


def test_build_status_and_wait_take_a_folder_of_spec_files_as_the_tree(checkout: Path) -> None:
    write(
        checkout / "sample" / "base" / "base.yaml",
        cmdimage("sample-base", args=["true"], outputMode="remote"),
    )
    built = cli(checkout, "build", "sample")
    assert built.returncode == 0, built.stderr
    assert "sample-base built: " in built.stderr
    assert (checkout / "sample" / "base" / "base.status.yaml").is_file()
    assert not (checkout / ".cmdimage-watch").exists()  # nothing written into `.`
    shown = cli(checkout, "status", "sample")
    assert shown.returncode == 0
    assert "sample-base" in shown.stdout
    waited = cli(checkout, "wait", "sample", "sample-base", "--timeout", "5")
    assert (waited.returncode, waited.stderr) == (0, "")


def test_names_are_required_where_the_command_needs_them(here: Path) -> None:
    with pytest.raises(typer.Exit) as exit_:
        _dir_and_names([], need_names=True)
    assert exit_.value.exit_code == 2


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cmdimage_watch", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_an_unknown_name_gets_the_nearest_and_a_folder_gets_the_way_to_name_it(
    here: Path,
) -> None:
    (here / ".cmdimage-watch").mkdir()
    typo = cli(here, "wait", "ap", "--timeout", "1")
    assert (typo.returncode, typo.stderr) == (
        2,
        "error: no CmdImage named ap in .; did you mean app?\n",
    )
    (here / "lib").mkdir()
    folder = cli(here, "wait", "lib")
    assert folder.returncode == 2
    assert folder.stderr == (
        "error: no CmdImage named lib in . (known: app); to name the folder lib as the tree, "
        "write lib/\n"
    )


@pytest.mark.parametrize("command", ["build", "watch"])
def test_a_flag_out_of_range_is_bad_usage_named_by_its_flag(here: Path, command: str) -> None:
    result = cli(here, command, ".", "--build-timeout", "-1")
    assert (result.returncode, result.stderr) == (
        2,
        "error: --build-timeout: Input should be greater than 0\n",
    )


def test_a_typo_of_a_command_is_named_and_a_folder_is_still_watched(here: Path) -> None:
    for typo, meant in (("buidl", "build"), ("statsu", "status"), ("vaildate", "validate")):
        result = cli(here, typo, "app")
        assert (result.returncode, result.stderr) == (
            2,
            f"error: No such command '{typo}'. Did you mean '{meant}'?\n",
        )
    (here / "bild").mkdir()  # a folder close to a command's name is a DIR: `watch bild`
    shown = cli(here, "bild", "--help")
    assert shown.returncode == 0
    assert "cmdimage_watch watch [OPTIONS]" in shown.stdout


def test_flags_that_take_no_value_show_none_in_help(here: Path) -> None:
    shown = cli(here, "watch", "--help").stdout + cli(here, "build", "--help").stdout
    flag_lines = [
        line
        for line in shown.splitlines()
        if any(flag in line for flag in ("--poll", "--quiet", "--verbose", "--force", "--tui"))
    ]
    assert len(flag_lines) >= 6
    assert [line for line in flag_lines if "<bool>" in line or "<int>" in line] == []


def test_a_name_or_folder_too_long_for_the_system_is_one_line_of_bad_usage(here: Path) -> None:
    long = "a" * 300
    for args in (("build", long), ("status", f"{long}/"), ("wait", long, "app"), (long,)):
        result = cli(here, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert f"{'a' * 79}… (300 characters)" in result.stderr


def test_a_missing_folder_or_image_is_said_before_anything_else(here: Path) -> None:
    missing = cli(here, "build", "nosuch/")
    assert (missing.returncode, missing.stderr) == (2, "error: nosuch does not exist\n")
    trigger = cli(here, "trigger", "nosuch")  # no daemon either: the typo comes first
    assert trigger.returncode == 2
    assert trigger.stderr.startswith("error: no CmdImage named nosuch in .")
    waited = cli(here, "wait", "nosuch", "app", "--timeout", "1")
    assert waited.returncode == 2
    assert waited.stderr.endswith("; nor is there a folder nosuch to be the tree\n")


@pytest.mark.parametrize("command", [("watch",), ("build",), ("trigger", "app")])
def test_a_state_folder_that_is_a_file_is_one_line_of_bad_usage(
    here: Path, command: tuple[str, ...]
) -> None:
    (here / ".cmdimage-watch").write_text("not a folder")
    result = cli(here, *command)
    assert (result.returncode, result.stderr) == (
        2,
        f"error: {here / '.cmdimage-watch'} is not a folder; cmdimage-watch keeps its state "
        "there: move it away, then run again\n",
    )
