"""Cheap text signals: character lengths and turn counts, normalised-text hash, zlib-compressed size."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from ..errors import ConfigError
from ..registry import register_signal
from .base import Signal
from .segments import flatten


@register_signal("text_stats")
class TextStats(Signal):
    """Characters of query / response / whole conversation, and the number of turns.

    Columns: ``chars_query``, ``chars_response``, ``chars_total`` (Unicode code points of the turn
    contents; the query is every turn before the last assistant turn), ``turns`` (all turns, system
    included) and ``assistant_turns``.
    """

    version = "1"
    batch_size = 65536

    def columns(self) -> dict[str, pa.DataType]:
        return {"chars_query": pa.int64(), "chars_response": pa.int64(), "chars_total": pa.int64(),
                "turns": pa.int32(), "assistant_turns": pa.int32()}

    def compute(self, batch: pa.Table) -> dict[str, np.ndarray]:
        fb = flatten(batch)
        per_turn = pc.utf8_length(fb.content_array).to_numpy(zero_copy_only=False)
        is_asst = pc.equal(fb.role_array, "assistant").to_numpy(zero_copy_only=False).astype(np.int64)
        return {
            "chars_query": fb.per_record_sum(per_turn, "query"),
            "chars_response": fb.per_record_sum(per_turn, "response"),
            "chars_total": fb.per_record_sum(per_turn, "conversation"),
            "turns": np.diff(fb.offsets).astype(np.int32),
            "assistant_turns": fb.per_record_sum(is_asst, "conversation").astype(np.int32),
        }


def normalise_for_hash(roles: list[str], contents: list[str], *, lowercase: bool = True) -> bytes:
    """Roles, then contents joined by NUL (kept as turn boundary), whitespace runs collapsed, lower-cased."""
    text = " ".join("\x00".join(contents).split())
    if lowercase:
        text = text.lower()
    return (",".join(roles) + "\x00" + text).encode("utf-8", "surrogatepass")


@register_signal("exact_hash")
class ExactHash(Signal):
    """xxh3-64 of the normalised conversation (column ``exact_hash``) for exact dedup.

    ``segment``: ``conversation`` (default: all turns and roles), ``query`` or ``response``.
    Normalisation: whitespace runs collapse to one space, leading/trailing whitespace is dropped, text is
    lower-cased (``lowercase=False`` keeps case). Stored as int64 (the hash's bits, reinterpreted).
    """

    version = "1"
    batch_size = 65536

    def __init__(self, segment: str = "conversation", lowercase: bool = True):
        if segment not in ("conversation", "query", "response"):
            raise ConfigError(f"exact_hash: segment must be conversation, query or response, not {segment!r}")
        self.segment, self.lowercase = segment, bool(lowercase)

    def config(self) -> dict[str, Any]:
        return {"segment": self.segment, "lowercase": self.lowercase}

    def columns(self) -> dict[str, pa.DataType]:
        return {"exact_hash": pa.int64()}

    def compute(self, batch: pa.Table) -> dict[str, np.ndarray]:
        fb = flatten(batch)
        h = xxhash.xxh3_64_intdigest
        off = fb.offsets.tolist()
        last = fb.last_assistant.tolist()
        out = np.empty(fb.n, dtype=np.uint64)
        for i in range(fb.n):
            s, e = off[i], off[i + 1]
            if self.segment == "query":
                e = last[i] if last[i] >= 0 else e
            elif self.segment == "response":
                s, e = (last[i], last[i] + 1) if last[i] >= 0 else (e, e)
            out[i] = h(normalise_for_hash(fb.roles[s:e], fb.contents[s:e], lowercase=self.lowercase))
        return {"exact_hash": out.view(np.int64)}


@register_signal("compression")
class Compression(Signal):
    """zlib (DEFLATE) size of the UTF-8 text of a segment: ``zlib_bytes`` and ``zlib_ratio``
    (compressed / raw bytes; lower means more redundant text). ``segment`` defaults to the conversation.
    """

    version = "1"
    batch_size = 16384

    def __init__(self, segment: str = "conversation", level: int = 9):
        if segment not in ("conversation", "query", "response"):
            raise ConfigError(f"compression: segment must be conversation, query or response, not {segment!r}")
        if not 0 <= int(level) <= 9:
            raise ConfigError("compression: level must be 0..9")
        self.segment, self.level = segment, int(level)

    def config(self) -> dict[str, Any]:
        return {"segment": self.segment, "level": self.level}

    def columns(self) -> dict[str, pa.DataType]:
        return {"zlib_bytes": pa.int64(), "zlib_ratio": pa.float64()}

    def compute(self, batch: pa.Table) -> dict[str, np.ndarray]:
        texts = flatten(batch).texts(self.segment)
        raw = np.empty(len(texts), dtype=np.int64)
        comp = np.empty(len(texts), dtype=np.int64)
        for i, t in enumerate(texts):
            b = t.encode("utf-8", "surrogatepass")
            raw[i] = len(b)
            comp[i] = len(zlib.compress(b, self.level))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(raw > 0, comp / np.maximum(raw, 1), np.nan)
        return {"zlib_bytes": comp, "zlib_ratio": ratio}
