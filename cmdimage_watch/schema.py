"""`cmdimage-watch schema`: a JSON Schema (2020-12) of one document of a spec file.

Generated from `models` (field descriptions are the fields' docstrings), so an editor with
yaml-language-server checks and completes what `validate` checks. A document is checked by
its `apiVersion` and `kind`, as `specfiles` reads it: our four kinds and their Lists are
held to their model; a document of any other kind is left alone, as the daemon leaves it.
What a schema cannot say (a ref docker would refuse, a name used twice, an unknown image
map) stays `validate`'s. The repository ships the output at `SHIPPED`; a test keeps it equal.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from cmdimage_watch import models

SHIPPED = "schema/cmdimage-watch.schema.json"
SCHEMA_ID = "https://cmdimage-watch.dev/schema/cmdimage-watch.schema.json"
KIND_DOCS = {
    "CmdImage": "An image built by a command of its own (Tilt's custom_build).",
    "ImageMap": "A name for an image that CmdImages build on; its status names the image.",
    "FileWatch": "The sources of a CmdImage (named image:<imagemap>), or of nothing.",
    "Cluster": "Where images go: a registry to push to and a Docker engine to build on.",
}
NAME_PATTERN = r"^[^/%\u0000-\u001f\u007f]+$"  # as ObjectMeta's check; '.' and '..' below


def spec_schema() -> dict[str, Any]:
    pairs: list[tuple[type[BaseModel], Literal["validation"]]] = [
        (model, "validation") for model in models.MODELS.values()
    ]
    _, generated = models_json_schema(pairs, by_alias=True, ref_template="#/$defs/{model}")
    defs: dict[str, Any] = _cleaned(generated["$defs"])
    _add_what_validators_check(defs)
    for name, definition in defs.items():  # the models' docstrings are for their readers
        definition.pop("description", None)
        if name in KIND_DOCS:
            definition["description"] = KIND_DOCS[name]
    for kind in models.LIST_KINDS.values():
        item = copy.deepcopy(defs[kind])  # a List's item may leave its kind to the List
        item["required"] = [k for k in item["required"] if k not in ("apiVersion", "kind")]
        defs[f"{kind}ListItem"] = item
    by_kind = [
        _when(models.API_VERSION, kind, {"$ref": f"#/$defs/{kind}"}) for kind in models.MODELS
    ]
    lists = [
        _when(models.API_VERSION, kind, _list_of({"$ref": f"#/$defs/{item}ListItem"}))
        for kind, item in models.LIST_KINDS.items()
    ]
    lists.append(_when("v1", "List", _list_of({"allOf": by_kind})))  # a Kubernetes List
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "cmdimage-watch spec file (tilt.dev/v1alpha1)",
        "description": "One YAML document of a spec file: a CmdImage, ImageMap, FileWatch or "
        "Cluster, or a List of them. Documents of other kinds are left alone.",
        "type": ["object", "null"],
        "allOf": by_kind + lists,
        "$defs": defs,
    }


def _when(api: str, kind: str, then: dict[str, Any]) -> dict[str, Any]:
    match = {"apiVersion": {"const": api}, "kind": {"const": kind}}
    return {"if": {"properties": match, "required": ["apiVersion", "kind"]}, "then": then}


def _list_of(item: dict[str, Any]) -> dict[str, Any]:
    return {"properties": {"items": {"type": ["array", "null"], "items": item}}}


def _add_what_validators_check(defs: dict[str, Any]) -> None:
    """The checks `models` makes in validators that a schema can say too."""
    name = defs["ObjectMeta"]["properties"]["name"]
    name.update(pattern=NAME_PATTERN, maxLength=models.MAX_NAME_LENGTH)
    name["not"] = {"enum": [".", ".."]}
    spec = defs["CmdImageSpec"]
    spec["properties"]["env"]["items"]["pattern"] = "="  # KEY=VALUE
    both = {"outputTag": {"minLength": 1}, "outputsImageRefTo": {"minLength": 1}}
    spec["not"] = {"required": list(both), "properties": both}  # one tag mode at a time
    registry = defs["RegistryHosting"]
    registry["required"] = ["host"]
    registry["properties"]["host"]["minLength"] = 1
    del registry["properties"]["host"]["default"]


def _cleaned(value: Any) -> Any:
    """Without pydantic's generated titles, with each description on one line (docstrings
    wrap at the source's width)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "title" and isinstance(item, str):
                continue
            if key == "description" and isinstance(item, str):
                item = re.sub(r"(?<!\n)\n(?!\n)", " ", item)
            out[key] = _cleaned(item)
        return out
    if isinstance(value, list):
        return [_cleaned(item) for item in value]
    return value
