"""The engine's error names the address the builder uses, from the builder's environment.

No engine is needed: these are the messages for an engine that is not there.
"""

from __future__ import annotations

import pytest

from cmdimage_watch.engine import DEFAULT_HOST, Engines


def test_an_unreachable_engine_is_named_from_the_builders_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///the-test-process.sock")
    message = str(Engines({}).error("", OSError("refused")))
    assert message.startswith(f"Docker engine at {DEFAULT_HOST} is not reachable: refused. ")
    named = Engines({"DOCKER_HOST": "tcp://builder:2375"}).error("", OSError("refused"))
    assert str(named).startswith("Docker engine at tcp://builder:2375 is not reachable")
    explicit = Engines({}).error("tcp://cluster:2375", OSError("refused"))
    assert str(explicit).startswith("Docker engine at tcp://cluster:2375 is not reachable")
