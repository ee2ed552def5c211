"""The one YAML reader: recipes, bench configs, rubrics and prompt files (a foundation: imports only errors)."""

from __future__ import annotations

import os
from typing import Any

from .errors import ConfigError


def load_yaml_mapping(path: str, what: str) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping (safe loader only); errors name the file and give
    ``file:line:column`` for bad YAML."""
    import yaml

    if not os.path.isfile(path):
        raise ConfigError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        loc = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{loc}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} is a mapping of keys")
    return data


def sequence_item_lines(path: str, key: str) -> list[int]:
    """The 1-based line of each item of the list under the top-level ``key`` of a YAML mapping file (for
    errors that name an item's line); ``[]`` when the key holds no list. Read after ``load_yaml_mapping``
    accepted the file."""
    import yaml

    with open(path, encoding="utf-8") as fh:
        root = yaml.compose(fh, Loader=yaml.SafeLoader)
    for k, v in getattr(root, "value", []):
        if getattr(k, "value", None) == key and isinstance(v, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in v.value]
    return []
