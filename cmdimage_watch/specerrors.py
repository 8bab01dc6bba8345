"""What a pydantic validation error of a spec says to a user: the field path in Tilt's
camelCase (`spec.imageMaps[0]`) and a message, with the nearest known field for an unknown
one. `specfiles` adds the file, line and column.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails


def field_path(loc: tuple[str | int, ...]) -> str:
    """`("spec", "imageMaps", 0)` as `spec.imageMaps[0]`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def describe(error: ErrorDetails, model: type[BaseModel]) -> str:
    """The message for one error of validating `model`: "unknown field; did you mean X?"."""
    if error["type"] == "extra_forbidden":
        known = _known_fields(model, error["loc"][:-1])
        guess = difflib.get_close_matches(str(error["loc"][-1]), known, n=1, cutoff=0.6)
        return "unknown field" + (f"; did you mean {guess[0]}?" if guess else "")
    if error["type"] == "missing":
        return "required field is missing"
    msg = error["msg"]
    return msg.removeprefix("Value error, ")


def _known_fields(model: Any, loc: tuple[str | int, ...]) -> list[str]:
    for part in loc:
        if isinstance(part, int):
            continue
        fields = {f.alias or n: f for n, f in model.model_fields.items()}
        if part not in fields:
            return []
        model = _model_in(fields[part].annotation)
        if model is None:
            return []
    return [f.alias or n for n, f in model.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, tuple):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found:
                return found
    return None
