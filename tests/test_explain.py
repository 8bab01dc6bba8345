"""`cmdimage-watch explain`: the real command line, after real `build`s of a tree on disk.

The images are `outputMode: remote` commands that print nothing to the engine, so what is
explained is the state folder and the status files that `build` wrote.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers import cmdimage, write

ROOT_ARGS = ["sh", "-c", "true"]


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cmdimage_watch", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def image(root: Path, name: str, **spec: Any) -> Path:
    doc = cmdimage(name, f"ciw-explain-{name}", args=ROOT_ARGS, outputMode="remote", **spec)
    return write(root / name / f"{name}.yaml", doc)


def explained(root: Path, name: str) -> dict[str, Any]:
    done = cli("explain", root, name, "--json")
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def built(root: Path) -> None:
    done = cli("build", root)
    assert done.returncode == 0, done.stderr


def test_what_changed_since_the_last_good_build(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    image(root, "app", env=["MODE=a"])
    for name, text in (("a.txt", "a"), ("b.txt", "b")):
        (root / "app" / name).write_text(text)
    built(root)
    up_to_date = explained(root, "app")
    assert up_to_date["buildsNow"] is False
    assert up_to_date["now"].startswith("no: its inputs are those of its last good build")
    assert up_to_date["last"]["completed"]["reason"] == "initial build"

    (root / "app" / "a.txt").write_text("a2")
    (root / "app" / "b.txt").unlink()
    (root / "app" / "c.txt").write_text("c")
    image(root, "app", env=["MODE=b"])

    found = explained(root, "app")
    assert found["buildsNow"] is True
    assert found["now"] == "yes: spec changed"
    assert found["changes"] == [{"what": "spec.env", "before": ["MODE=a"], "after": ["MODE=b"]}]
    assert (found["added"], found["removed"], found["changed"]) == (["c.txt"], ["b.txt"], ["a.txt"])
    text = cli("explain", root, "app").stdout
    assert "    spec.env: ['MODE=a'] -> ['MODE=b']" in text
    assert "    files added: c.txt" in text and "    files removed: b.txt" in text


def test_files_left_out_name_their_rule_with_its_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    image(root, "app")
    ignore = root / "app" / ".dockerignore"
    ignore.write_text("# what the build does not need\nsecret.txt\nlogs\n!logs/keep.txt\n")
    for rel in ("main.txt", "secret.txt", "logs/a.log", "logs/keep.txt", "cache/x.tmp~"):
        (root / "app" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "app" / rel).write_text(rel)
    (root / "app" / ".git").mkdir()
    built(root)

    left = {item["path"]: item for item in explained(root, "app")["leftOut"]}
    assert left["secret.txt"] == {
        "path": "secret.txt",
        "rule": "matches secret.txt",
        "file": "app/.dockerignore",  # in the tree, as the spec file is named
        "line": 2,
    }
    assert left["logs/a.log"]["line"] == 3  # `!logs/keep.txt` brings keep.txt back
    assert "logs/keep.txt" not in left and "main.txt" not in left
    assert left["app.yaml"]["rule"] == "spec files are never sources"
    assert left["app.status.yaml"]["rule"].startswith("status files")
    assert left["cache/x.tmp~"]["rule"].startswith("status files and editor temporaries")
    assert left[".git/"]["rule"].startswith("hidden folders are never sources")


FILEWATCH = """\
apiVersion: tilt.dev/v1alpha1
kind: FileWatch
metadata:
  name: image:ciw-explain-app
spec:
  watchedPaths: [src]
  ignores:
    - basePath: src
      patterns:
        - "*.txt"
        - "!gen.txt"
    - basePath: src
      patterns:
        - gen.txt
"""


def test_a_filewatch_ignore_is_named_with_its_object_and_line(tmp_path: Path) -> None:
    """Each ignore entry decides alone, as the daemon applies them: the first entry brings
    gen.txt back, the second leaves it out, and that is the rule named."""
    root = tmp_path / "tree"
    image(root, "app")
    for name in ("main.go", "notes.txt", "gen.txt"):
        (root / "app" / "src").mkdir(parents=True, exist_ok=True)
        (root / "app" / "src" / name).write_text(name)
    spec = root / "app" / "watch.yaml"
    spec.write_text(FILEWATCH)
    built(root)
    left = {i["path"]: i for i in explained(root, "app")["leftOut"]}
    where = "app/watch.yaml (FileWatch image:ciw-explain-app)"
    assert left["src/notes.txt"] == {
        "path": "src/notes.txt",
        "rule": "matches *.txt",
        "file": where,
        "line": 10,
    }
    assert (left["src/gen.txt"]["rule"], left["src/gen.txt"]["line"]) == ("matches gen.txt", 14)
    assert "src/main.go" not in left


def test_explain_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    image(root, "app")
    (root / "app" / "a.txt").write_text("a")
    built(root)
    (root / "app" / "a.txt").write_text("b")

    def snapshot() -> dict[str, tuple[int, int]]:
        return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}

    before = snapshot()
    assert explained(root, "app")["changed"] == ["a.txt"]
    assert snapshot() == before


def test_an_image_waits_for_what_it_is_built_from(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    image(root, "base")
    image(root, "app", imageMaps=["ciw-explain-base"])
    (root / "base" / "src.txt").write_text("v1")
    built(root)
    (root / "base" / "src.txt").write_text("v2")

    app = explained(root, "app")
    assert app["buildsNow"] is False
    assert app["upstream"] == ["base"]
    assert "but base, which it is built from, would build" in app["now"]
    assert app["needs"] == ["base", "app"] and app["neededBy"] == []
    base = explained(root, "base")
    assert base["buildsNow"] is True and base["changed"] == ["src.txt"]
    assert base["neededBy"] == ["app"]


def test_never_built_and_unknown_images(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    image(root, "app")
    fresh = explained(root, "app")
    assert (fresh["buildsNow"], fresh["now"], fresh["last"]) == (True, "yes: never built", {})
    unknown = cli("explain", root, "ap")
    assert unknown.returncode == 2
    assert "no CmdImage named ap" in unknown.stderr and "did you mean app" in unknown.stderr


def test_an_invalid_spec_cannot_build(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    write(root / "app" / "app.yaml", cmdimage("app", "ciw-explain-app", args=[]))
    found = explained(root, "app")
    assert found["buildsNow"] is None
    assert found["now"].startswith("it cannot build: ") and "args" in found["now"]
