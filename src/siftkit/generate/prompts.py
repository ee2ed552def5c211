"""Load the evolution prompts: siftkit's ``prompts.yaml``, optionally overridden by a user file."""

from __future__ import annotations

import os
from typing import Any

from ..errors import ConfigError
from ..yamlfile import load_yaml_mapping

BUILTIN = os.path.join(os.path.dirname(__file__), "prompts.yaml")
KINDS = ("instruction", "response")


def _read(path: str) -> dict[str, Any]:
    return load_yaml_mapping(path, "prompts file")


def load_prompts(path: str | None = None) -> dict[str, Any]:
    """The prompts (``system``, ``answer_system``, ``template_words``, ``operations``). Keys of ``path``
    replace siftkit's; operations are merged by name (a new name adds an operation)."""
    data = _read(BUILTIN)
    if path:
        user = _read(path)
        ops = {**data["operations"], **(user.pop("operations", None) or {})}
        data = {**data, **user, "operations": ops}
    where = path or BUILTIN
    for name, op in data["operations"].items():
        if not isinstance(op, dict) or op.get("kind") not in KINDS or not isinstance(op.get("template"), str):
            raise ConfigError(f"prompts file {where}: operation {name!r} needs kind (instruction|response) "
                              "and a template string")
        need = ["{instruction}"] + (["{response}"] if op["kind"] == "response" else [])
        for n in need:
            if n not in op["template"]:
                raise ConfigError(f"prompts file {where}: operation {name!r}: the template must contain {n}")
    if not isinstance(data.get("template_words"), list):
        raise ConfigError(f"prompts file {where}: template_words must be a list of phrases")
    return data
