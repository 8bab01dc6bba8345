"""Load (issue 9 §3): 1,000 images under random edits from several writer threads (sources,
specs, the hand-written statuses of the ImageMaps they need) while builds run, and readers
looping over the status files the whole time.

Once quiet: every status file's inputs digest matches a recomputation of that image's
inputs from disk, every image's last build saw its current source and spec, and no reader
ever saw a partial status file. The real daemon, real files; commands are `sh -c`.
`CIW_LOAD_IMAGES` sets the count (default 1,000), `CIW_LOAD_SECONDS` how long writers write.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from cmdimage_watch import project, sources, status
from cmdimage_watch.statusfiles import STATUS_HEADER, read_status_file
from tests.daemon_harness import Watchers
from tests.helpers import cmdimage, imagemap, write
from tests.helpers.polling import wait_until
from tests.helpers.tree import Tree

IMAGES = int(os.environ.get("CIW_LOAD_IMAGES", "1000"))
SECONDS = float(os.environ.get("CIW_LOAD_SECONDS", "5"))
MAPS = 10
PER_FOLDER = 10  # images per spec file: a spec edit touches ten


def spec_text(tree: Tree, block: int, tag: int) -> str:
    """The spec file of images block*10 .. block*10+9: each records what it built."""
    docs = []
    for i in range(block * PER_FOLDER, (block + 1) * PER_FOLDER):
        script = f'echo "$(cat src{i}.txt) $TAG" > {tree.out / f"built{i}"}'
        docs.append(
            cmdimage(
                f"img{i}",
                args=["sh", "-c", script],
                env=[f"TAG={tag}"],
                imageMaps=[f"map{i % MAPS}"],
                outputMode="remote",
            )
        )
    return "\n---\n".join(docs) + "\n"


def map_text(k: int, value: int) -> str:
    return imagemap(f"map{k}", status={"image": f"base:{value}"}) + "\n"


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    made = Tree(tmp_path / "tree", tmp_path / "out", "ciw-load").make()
    for k in range(MAPS):
        write(made.root / "maps" / f"map{k}.yaml", map_text(k, 0))
    for block in range(IMAGES // PER_FOLDER):
        folder = made.root / f"b{block:03d}"
        folder.mkdir()
        for i in range(block * PER_FOLDER, (block + 1) * PER_FOLDER):
            (folder / f"src{i}.txt").write_text("0")
        (folder / "images.yaml").write_text(spec_text(made, block, 0))
    return made


def writer(tree: Tree, seed: int, until: float) -> None:
    rnd = random.Random(seed)
    blocks = IMAGES // PER_FOLDER
    while time.monotonic() < until:
        kind = rnd.random()
        value = rnd.randrange(1_000_000)
        if kind < 0.7:  # a source
            i = rnd.randrange(IMAGES)
            (tree.root / f"b{i // PER_FOLDER:03d}" / f"src{i}.txt").write_text(str(value))
        elif kind < 0.9:  # a spec file: its ten images' env
            block = rnd.randrange(blocks)
            saved(tree.root / f"b{block:03d}" / "images.yaml", spec_text(tree, block, value), seed)
        else:  # an image map's hand-written status: every image that needs it
            k = rnd.randrange(MAPS)
            saved(tree.root / "maps" / f"map{k}.yaml", map_text(k, value), seed)
        time.sleep(rnd.random() * 0.01)


def saved(path: Path, text: str, writer: int) -> None:
    """A spec file saved as editors save: written beside (a `~` name, never a source), then
    renamed. Two writers writing one file in place can leave the tail of the longer text
    after the shorter: a spec file no one wrote, whose images vanish (CI found it once).
    Sources are still written in place, torn writes and all."""
    temporary = path.with_name(f"{path.name}.{writer}~")
    temporary.write_text(text)
    temporary.replace(path)


def reader(root: Path, stop: threading.Event, partial: list[str]) -> None:
    yaml = YAML(typ="safe")
    while not stop.is_set():
        for path in root.rglob("*.status.yaml"):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            try:
                assert data.startswith(STATUS_HEADER)
                list(yaml.load_all(data))
            except Exception as exc:  # a torn file is the failure this looks for
                partial.append(f"{path}: {exc!r}")


def recomputed(root: Path) -> dict[str, str]:
    """Each image's inputs digest, recomputed from the files as they are now."""
    index = project.load(root)
    cache = sources.HashCache()
    found = {}
    for name, image in index.images.items():
        maps = []
        for map_name in image.spec.image_maps:
            resolved = status.image_map_status(map_name, index, status.State())
            assert resolved is not None
            maps.append((map_name, resolved.image_from_local or resolved.image))
        hashes = sources.hash_sources(image, index, cache)
        found[name] = sources.Inputs.of(image, maps, index.cluster(image), hashes).digest()
    return found


def recorded(root: Path) -> dict[str, str]:
    found = {}
    for path in root.rglob("images.status.yaml"):
        for doc in read_status_file(path):
            if doc["kind"] == "CmdImage":
                annotations = doc["metadata"].get("annotations") or {}
                found[doc["metadata"]["name"]] = annotations.get(status.INPUTS_DIGEST, "")
    return found


@pytest.mark.timeout(900)
def test_a_thousand_images_under_random_edits_end_consistent(
    tree: Tree, watchers: Watchers
) -> None:
    daemon = watchers.start(tree.root, "--max-parallel", "8")
    wait_until(
        lambda: len(list(tree.out.glob("built*"))) == IMAGES, "every first build", timeout=300
    )
    stop, partial = threading.Event(), list[str]()
    readers = [threading.Thread(target=reader, args=(tree.root, stop, partial)) for _ in range(2)]
    until = time.monotonic() + SECONDS
    writers = [threading.Thread(target=writer, args=(tree, n, until)) for n in range(4)]
    for thread in (*readers, *writers):
        thread.start()
    for thread in writers:
        thread.join()

    expected = recomputed(tree.root)
    assert len(expected) == IMAGES
    wait_until(lambda: recorded(tree.root) == expected, "every status to match the disk", 300)
    stop.set()
    for thread in readers:
        thread.join()

    assert partial == []
    images = project.load(tree.root).images
    for i in range(IMAGES):  # the last build of each saw its current source and spec
        source = (tree.root / f"b{i // PER_FOLDER:03d}" / f"src{i}.txt").read_text()
        (tag,) = images[f"img{i}"].spec.env
        assert (tree.out / f"built{i}").read_text().split() == [source, tag.removeprefix("TAG=")]
    assert daemon.proc.poll() is None
    assert "Traceback" not in daemon.output()
