"""The examples the repository gives, run as written: the header of `scripts/dev`, on a copy
of the checkout with services of its own on other ports, as a second checkout would run
them (`CIW_SERVICES_DIR`, `CIW_REGISTRY_PORT`, `CIW_ENGINE2_PORT`).

So the sample's Cluster must follow the registry those services started: before, it named
`localhost:5000` whatever the port, and a second checkout pushed to the first one's registry.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from cmdimage_watch.statusfiles import read_status_file
from scripts.walkthrough import REPO, copy_checkout
from tests.helpers import free_port


def header_examples(script: Path) -> list[str]:
    """The commands a script's header comment shows: lines like `#   scripts/dev build x`."""
    return re.findall(r"^#\s+(scripts/\S+ [^\[\n]*?)\s*$", script.read_text(), flags=re.M)


def test_the_dev_example_runs_as_written_with_services_of_its_own(tmp_path: Path) -> None:
    (example,) = header_examples(REPO / "scripts" / "dev")
    assert example == "scripts/dev build sample-project"
    work = copy_checkout(tmp_path / "checkout")
    port = free_port()
    services = Path(tempfile.mkdtemp(prefix="ciw-", dir="/tmp"))  # sockets' paths are short
    env = os.environ | {
        "CIW_SERVICES_DIR": str(services),
        "CIW_REGISTRY_PORT": str(port),
        "CIW_ENGINE2_PORT": str(free_port()),
    }
    try:
        done = subprocess.run(
            ["bash", "-c", example], cwd=work, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        cluster = (work / "sample-project" / "cluster.yaml").read_text()
        assert f"host: localhost:{port}\n" in cluster
        base = read_status_file(work / "sample-project" / "base" / "base.status.yaml")
        assert base[0]["status"]["ref"].startswith(f"localhost:{port}/sample-base:tilt-")
    finally:
        subprocess.run(
            [str(work / "scripts" / "services.sh"), "stop"], env=env, timeout=120, check=False
        )
        shutil.rmtree(services, ignore_errors=True)
