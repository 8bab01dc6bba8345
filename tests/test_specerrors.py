"""Field paths and messages for pydantic's errors, as a user reads them in a status file."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cmdimage_watch import models
from cmdimage_watch.specerrors import describe, field_path


@pytest.mark.parametrize(
    ("loc", "path"),
    [(("spec", "imageMaps", 0), "spec.imageMaps[0]"), ((), "(document)"), (("ref",), "ref")],
)
def test_field_paths_read_as_tilt_writes_them(loc: tuple[str | int, ...], path: str) -> None:
    assert field_path(loc) == path


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"ref": "a", "args": ["x"], "imageMap": []}, "unknown field; did you mean imageMaps?"),
        ({"ref": "a", "args": ["x"], "zzz": 1}, "unknown field"),
        ({"args": ["x"]}, "required field is missing"),
        ({"ref": "a", "args": ["x"], "env": ["NOEQUALS"]}, "'NOEQUALS' is not KEY=VALUE"),
    ],
)
def test_each_error_says_what_is_wrong(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        models.CmdImageSpec.model_validate(spec)
    assert describe(info.value.errors()[0], models.CmdImageSpec).startswith(message)
