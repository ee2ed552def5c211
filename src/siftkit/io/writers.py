"""Write selected records in their original form or converted for SFT trainers.

Formats:
- ``original``: each record's untouched original JSON (values unchanged);
- ``messages``: ``{"id", "source", "messages": [{"role", "content"}]}`` (TRL ``SFTTrainer``, axolotl
  ``chat_template`` datasets);
- ``sharegpt``: ``{"id", "source", "system"?, "conversations": [{"from": "human"|"gpt"|"observation",
  "value"}]}`` (LLaMA-Factory ``formatting: sharegpt``, axolotl);
- ``alpaca``: ``{"instruction", "input", "output", "system"?, "history": [[user, assistant], ...]}``
  (LLaMA-Factory ``alpaca``); conversations with tool turns cannot be represented and raise an error.
File formats: ``jsonl`` (UTF-8, one object a line) or ``parquet`` (zstd).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ConfigError

SHAREGPT_ROLES = {"user": "human", "assistant": "gpt", "tool": "observation"}


def to_messages(rec: dict[str, Any]) -> dict[str, Any]:
    return {"id": rec["id"], "source": rec["source"],
            "messages": [{"role": m["role"], "content": m["content"]} for m in rec["messages"]]}


def to_sharegpt(rec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": rec["id"], "source": rec["source"]}
    system = [m["content"] for m in rec["messages"] if m["role"] == "system"]
    if system:
        out["system"] = "\n\n".join(system)
    out["conversations"] = [{"from": SHAREGPT_ROLES[m["role"]], "value": m["content"]}
                            for m in rec["messages"] if m["role"] != "system"]
    return out


def to_alpaca(rec: dict[str, Any]) -> dict[str, Any]:
    msgs = rec["messages"]
    system = [m["content"] for m in msgs if m["role"] == "system"]
    turns = [m for m in msgs if m["role"] != "system"]
    if any(m["role"] == "tool" for m in turns):
        raise ConfigError(f"record {rec['id']} has tool turns, which Alpaca cannot represent; "
                          f"use --output-format messages or sharegpt")
    # Drop trailing user turns (no answer to train on) and pair the rest.
    while turns and turns[-1]["role"] != "assistant":
        turns = turns[:-1]
    pairs: list[list[str]] = []
    pending: list[str] = []
    for m in turns:
        if m["role"] == "user":
            pending.append(m["content"])
        else:
            pairs.append(["\n\n".join(pending), m["content"]])
            pending = []
    out: dict[str, Any] = {"instruction": pairs[-1][0], "input": "", "output": pairs[-1][1]}
    if system:
        out["system"] = "\n\n".join(system)
    if len(pairs) > 1:
        out["history"] = pairs[:-1]
    out["id"], out["source"] = rec["id"], rec["source"]
    return out


CONVERTERS = {"messages": to_messages, "sharegpt": to_sharegpt, "alpaca": to_alpaca}


def write_records(table: pa.Table, path: str, fmt: str = "original", file_format: str = "jsonl") -> int:
    """Write the rows of a pool table (already in output order). Returns the number written."""
    if fmt != "original" and fmt not in CONVERTERS:
        raise ConfigError(f"unknown output format {fmt!r}; use original, messages, sharegpt or alpaca")
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    tmp = path + ".tmp"
    if fmt == "original":
        originals = table.column("original").to_pylist()
        if file_format == "jsonl":
            with open(tmp, "wb") as fh:
                for s in originals:
                    fh.write(s.encode("utf-8", "surrogatepass"))
                    fh.write(b"\n")
        else:
            rows = [orjson.loads(s) for s in originals]
            rows = [r if isinstance(r, dict) else {"record": r} for r in rows]
            pq.write_table(table_from_rows(rows), tmp, compression="zstd")
    else:
        conv = CONVERTERS[fmt]
        recs = (conv(r) for r in _iter_rows(table.select(["id", "source", "messages"])))
        if file_format == "jsonl":
            with open(tmp, "wb") as fh:
                fh.writelines(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in recs)
        else:
            pq.write_table(table_from_rows(list(recs)), tmp, compression="zstd")
    os.replace(tmp, path)
    return table.num_rows


def table_from_rows(rows: list[dict[str, Any]]) -> pa.Table:
    """Arrow table over the union of the rows' keys (``from_pylist`` alone keeps the first row's keys only)."""
    keys: dict[str, None] = {}
    for r in rows:
        for k in r:
            keys.setdefault(k, None)
    return pa.table({k: pa.array([r.get(k) for r in rows]) for k in keys}) if rows else pa.table({})


def _iter_rows(table: pa.Table) -> Iterable[dict[str, Any]]:
    for batch in table.to_batches(max_chunksize=8192):
        yield from batch.to_pylist()


def write_jsonl(rows: Iterable[dict[str, Any]], path: str) -> int:
    n = 0
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        for r in rows:
            fh.write(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE, default=str))
            n += 1
    os.replace(tmp, path)
    return n
