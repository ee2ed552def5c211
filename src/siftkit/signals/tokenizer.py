"""Resolve a tokenizer spec to a fast ``tokenizers.Tokenizer``.

Accepted specs:

- ``None`` / ``"default"``: the offline default, the XLM-R-family Unigram tokenizer (250K+ pieces,
  multilingual) shipped inside the ``tokenlearn-static-model`` package, a core dependency. Use it for
  offline work; pass your target model's tokenizer for counts that match your model.
- a ``tokenizer.json`` file, or a folder holding one (any HF model folder);
- a ``.gguf`` file (needs ``transformers`` and ``gguf``: the tokenizer is rebuilt from the GGUF metadata);
- a hub name such as ``Qwen/Qwen2.5-7B`` (downloads ``tokenizer.json``; falls back to transformers'
  ``AutoTokenizer`` for repos without one). Never runs remote code.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from ..errors import ConfigError, MissingDependencyError

DEFAULT = "default"


def default_tokenizer_path() -> str:
    try:
        import static_model
    except ImportError:
        raise MissingDependencyError("tokenlearn-static-model", None, "the default offline tokenizer") from None
    return os.path.join(os.path.dirname(static_model.__file__), "model", "tokenizer.json")


def tokenizer_file(spec: str | None) -> str | None:
    """The local tokenizer.json a spec points to, or None (hub names, .gguf, folders without one)."""
    if spec in (None, DEFAULT):
        return default_tokenizer_path()
    p = os.path.expanduser(str(spec))
    if os.path.isfile(p) and p.endswith(".json"):
        return p
    if os.path.isdir(p) and os.path.isfile(os.path.join(p, "tokenizer.json")):
        return os.path.join(p, "tokenizer.json")
    return None


def tokenizer_identity(spec: str | None) -> dict[str, Any]:
    """What identifies the tokenizer for cache fingerprints: the spec and, for local files, a content hash."""
    import xxhash

    f = tokenizer_file(spec)
    ident: dict[str, Any] = {"tokenizer": spec or DEFAULT}
    if f is not None:
        with open(f, "rb") as fh:
            ident["tokenizer_sha"] = xxhash.xxh3_64_hexdigest(fh.read())
    elif spec and os.path.isfile(os.path.expanduser(spec)):
        st = os.stat(os.path.expanduser(spec))
        ident["tokenizer_file"] = [st.st_size, int(st.st_mtime)]
    return ident


@lru_cache(maxsize=8)
def load_tokenizer(spec: str | None) -> Any:
    from tokenizers import Tokenizer

    f = tokenizer_file(spec)
    if f is not None:
        return Tokenizer.from_file(f)
    p = os.path.expanduser(str(spec))
    if os.path.isfile(p) and p.endswith(".gguf"):
        return _from_transformers(os.path.dirname(p) or ".", gguf_file=os.path.basename(p))
    if os.path.isdir(p):
        return _from_transformers(p)
    if os.path.exists(p):
        raise ConfigError(f"tokenizer {spec!r}: expected a tokenizer.json, a model folder or a .gguf file")
    try:
        return Tokenizer.from_pretrained(str(spec))
    except Exception as first:  # noqa: BLE001 - hub errors vary; report both attempts below
        try:
            return _from_transformers(str(spec))
        except MissingDependencyError:
            raise ConfigError(f"cannot load tokenizer {spec!r} from the hub ({first}); pass a local "
                              f"tokenizer.json or model folder, or omit --tokenizer for the offline "
                              f"default") from None
        except Exception as second:  # noqa: BLE001
            raise ConfigError(f"cannot load tokenizer {spec!r}: {first}; transformers: {second}") from None


def _from_transformers(name: str, **kw: Any) -> Any:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise MissingDependencyError("transformers", "model", f"loading tokenizer {name!r}") from None
    tok = AutoTokenizer.from_pretrained(name, use_fast=True, trust_remote_code=False, **kw)
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError(f"tokenizer {name!r} has no fast (Rust) version; convert it to tokenizer.json")
    return backend
