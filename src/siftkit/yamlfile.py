"""The one YAML reader: recipes, bench configs, rubrics and prompt files. Files are read through
:mod:`siftkit.fs`, so rubrics and prompt files may be URLs (``s3://``, ``gs://``, ``file://``): one read of
the whole file."""

from __future__ import annotations

from typing import Any

from . import fs
from .errors import ConfigError


def read_small_file(path: str, what: str) -> bytes:
    """The bytes of a small file (a YAML or prompt file), local or a URL, in one read; ConfigError naming
    ``what`` and the file when it is missing or cannot be read."""
    try:
        return fs.read_bytes(path)
    except IsADirectoryError:
        raise ConfigError(f"{what} {fs.display(path)} is a folder, not a file") from None
    except OSError as e:
        if fs.error_kind(e) == "missing":
            raise ConfigError(f"{what} not found: {fs.display(path)}") from None
        raise fs.fs_error(path, e, f"cannot read {what}") from None


def load_yaml_mapping(path: str, what: str, text: str | bytes | None = None) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping (safe loader only); errors name the file and give
    ``file:line:column`` for bad YAML. ``text``: the file's content when already read (no second read)."""
    import yaml

    if text is None:
        text = read_small_file(path, what)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        loc = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError(f"{fs.display(path)}{loc}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{fs.display(path)}: a {what} is a mapping of keys")
    return data


def sequence_item_lines(path: str, key: str, text: str | bytes | None = None) -> list[int]:
    """The 1-based line of each item of the list under the top-level ``key`` of a YAML mapping file (for
    errors that name an item's line); ``[]`` when the key holds no list. Read after ``load_yaml_mapping``
    accepted the file (pass the same ``text`` to read it once)."""
    import yaml

    root = yaml.compose(read_small_file(path, "YAML file") if text is None else text, Loader=yaml.SafeLoader)
    for k, v in getattr(root, "value", []):
        if getattr(k, "value", None) == key and isinstance(v, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in v.value]
    return []
