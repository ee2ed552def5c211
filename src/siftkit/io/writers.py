"""Write selected records in their original form or converted for SFT / preference trainers.

Formats (one output file holds one record kind; see docs/formats.md):

- ``original``: each record's untouched original JSON (values unchanged);
- ``messages`` (OpenAI / TRL): SFT ``{"id", "source", "messages": [...], "tools"?}``; preference
  ``{"id", "source", "prompt": [...], "chosen": [...], "rejected": [...]}``; KTO ``{"id", "source",
  "prompt": [...], "completion": [...], "label"}``. Messages are ``{"role", "content"}`` plus
  ``tool_calls: [{"id", "type": "function", "function": {"name", "arguments"}}]`` on assistant turns and
  ``tool_call_id`` / ``name`` on tool turns; ``tools`` is a JSON string (TRL ``SFTTrainer`` parses it);
- ``sharegpt`` (LLaMA-Factory ``formatting: sharegpt``): ``{"id", "source", "system"?, "tools"?,
  "conversations": [{"from": "human"|"gpt"|"function_call"|"observation", "value"}]}``; preference adds
  ``"chosen"``/``"rejected"`` message objects (LLaMA-Factory ranking), KTO a boolean ``"label"``;
- ``alpaca`` (LLaMA-Factory ``alpaca``): ``{"instruction", "input", "output", "system"?, "history"?}``;
  preference ``"chosen"``/``"rejected"`` strings instead of ``output``; KTO adds ``"label"``. Records with
  tool calls or tool results cannot be written as Alpaca.

A record a format cannot represent is not written: ``write_records`` reports it in ``rejects`` (code
``unrepresentable``, with the reason) and goes on. ``dataset_info_entry`` gives the LLaMA-Factory
``dataset_info.json`` entry of a converted output.
File formats: ``jsonl`` (UTF-8, one object a line) or ``parquet`` (zstd).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import fs as _fs
from ..errors import ConfigError

SHAREGPT_ROLES = {"user": "human", "assistant": "gpt", "tool": "observation"}
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
MESSAGES_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                 "observation_tag": "tool", "function_tag": "function_call", "system_tag": "system"}
RECORD_COLUMNS = ("id", "source", "file", "row", "line", "messages", "tools", "kind", "label", "rejected",
                  "prompt_turns")


class Unrepresentable(Exception):
    """A record the output format cannot hold; ``reason`` says why."""

    def __init__(self, reason: str, field: str | None = None):
        super().__init__(reason)
        self.reason, self.field = reason, field


# ---------------------------------------------------------------- helpers

def _split(rec: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """(prompt, answer) of a preference / KTO record; (messages, []) for SFT."""
    msgs = rec["messages"]
    k = rec.get("prompt_turns")
    return (msgs, []) if k is None else (msgs[:k], msgs[k:])


def _calls(m: dict[str, Any]) -> list[dict[str, Any]]:
    return m.get("tool_calls") or []


def _has_tool_turns(msgs: Iterable[dict[str, Any]]) -> bool:
    return any(m["role"] == "tool" or _calls(m) for m in msgs)


def _oai(m: dict[str, Any]) -> dict[str, Any]:
    if len(m) == 2:  # a plain {role, content} (see _plain_view)
        return m
    out: dict[str, Any] = {"role": m["role"], "content": m["content"]}
    calls = _calls(m)
    if calls:
        out["tool_calls"] = [{**({"id": c["id"]} if c.get("id") is not None else {}), "type": "function",
                              "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls]
    if m.get("tool_call_id") is not None:
        out["tool_call_id"] = m["tool_call_id"]
    if m.get("name") is not None:
        out["name"] = m["name"]
    return out


def _args_obj(arguments: str) -> Any:
    try:
        return orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments


def _system(msgs: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in msgs if m["role"] == "system"]


# ---------------------------------------------------------------- messages (OpenAI / TRL)

def to_messages(rec: dict[str, Any], opts: dict[str, Any] | None = None) -> dict[str, Any]:
    opts = opts or {}
    out: dict[str, Any] = {"id": rec["id"], "source": rec["source"]}
    kind = rec.get("kind") or "sft"
    if kind == "sft":
        out["messages"] = [_oai(m) for m in rec["messages"]]
    else:
        prompt, answer = _split(rec)
        out["prompt"] = [_oai(m) for m in prompt]
        if kind == "preference":
            out["chosen"] = [_oai(m) for m in answer]
            out["rejected"] = [_oai(m) for m in rec["rejected"]]
        else:
            out["completion"] = [_oai(m) for m in answer]
            out["label"] = rec["label"]
    if opts.get("tools"):
        out["tools"] = rec.get("tools")
    return out


# ---------------------------------------------------------------- sharegpt (LLaMA-Factory)

def _sharegpt_turns(msgs: list[dict[str, Any]], base: int = 0,
                    field: str = "messages") -> tuple[list[dict[str, Any]], bool]:
    """Non-system turns as LLaMA-Factory ShareGPT turns, and whether any is a tool call or result;
    consecutive tool results become one observation whose value is a JSON list of the results."""
    out: list[dict[str, Any]] = []
    pending: list[str] = []
    tooly = False
    for i, m in enumerate(msgs):
        role = m["role"]
        if role == "tool":
            pending.append(m["content"])
            tooly = True
            continue
        if pending:
            out.append({"from": "observation",
                        "value": pending[0] if len(pending) == 1 else orjson.dumps(pending).decode()})
            pending = []
        if role == "system":
            continue
        calls = m.get("tool_calls")
        if calls:
            tooly = True
            if m["content"].strip():
                raise Unrepresentable(f"{field}[{base + i}]: assistant text alongside tool calls; a ShareGPT "
                                      f"function_call turn holds only the calls", f"{field}[{base + i}]")
            objs = [{"name": c["name"], "arguments": _args_obj(c["arguments"])} for c in calls]
            out.append({"from": "function_call",
                        "value": orjson.dumps(objs[0] if len(objs) == 1 else objs).decode()})
        else:
            out.append({"from": SHAREGPT_ROLES[role], "value": m["content"]})
    if pending:
        out.append({"from": "observation",
                    "value": pending[0] if len(pending) == 1 else orjson.dumps(pending).decode()})
    return out, tooly


_ODD = ("human", "observation")
_EVEN = ("gpt", "function_call")


def _check_alternation(conv: list[dict[str, Any]], ranking: bool) -> None:
    """LLaMA-Factory's ShareGPT rules: human/observation at even positions, gpt/function_call at odd ones;
    an even count (odd for ranking prompts)."""
    for i, t in enumerate(conv):
        if t["from"] not in (_ODD if i % 2 == 0 else _EVEN):
            want = " or ".join(_ODD if i % 2 == 0 else _EVEN)
            raise Unrepresentable(f"conversations[{i}] is {t['from']} where LLaMA-Factory expects {want}",
                                  f"conversations[{i}]")
    if (len(conv) % 2 == 1) != ranking:
        raise Unrepresentable(f"{len(conv)} turns: LLaMA-Factory needs "
                              f"{'a prompt ending on a user or observation turn' if ranking else 'pairs of turns'}",
                              "conversations")


def to_sharegpt(rec: dict[str, Any], opts: dict[str, Any] | None = None) -> dict[str, Any]:
    opts = opts or {}
    out: dict[str, Any] = {"id": rec["id"], "source": rec["source"]}
    kind = rec.get("kind") or "sft"
    system = _system(rec["messages"])
    if system:
        out["system"] = "\n\n".join(system)
    if opts.get("tools"):
        out["tools"] = rec.get("tools") or ""
    prompt, answer = _split(rec)
    if kind == "preference":
        conv = _sharegpt_turns(prompt)[0]
        _check_alternation(conv, ranking=True)
        for key, part in (("chosen", answer), ("rejected", rec["rejected"])):
            turns = _sharegpt_turns(part, field=key)[0]
            if len(turns) != 1 or turns[0]["from"] not in _EVEN:
                raise Unrepresentable(f"the {key} answer has {len(turns)} turns; LLaMA-Factory ranking needs one "
                                      f"assistant message", key)
            out[key] = turns[0]
        out["conversations"] = conv
        return out
    conv, tooly = _sharegpt_turns(rec["messages"])
    if kind == "kto" or tooly:
        _check_alternation(conv, ranking=False)
    if kind == "kto":
        if len(answer) != 1:
            raise Unrepresentable(f"the KTO completion has {len(answer)} turns; LLaMA-Factory judges the last "
                                  f"message only", "completion")
        out["label"] = rec["label"]
    out["conversations"] = conv
    return out


# ---------------------------------------------------------------- alpaca (LLaMA-Factory)

def _alpaca_pairs(msgs: list[dict[str, Any]]) -> list[list[str]]:
    turns = [m for m in msgs if m["role"] != "system"]
    while turns and turns[-1]["role"] != "assistant":
        turns = turns[:-1]  # trailing user turns: no answer to train on
    pairs: list[list[str]] = []
    pending: list[str] = []
    for m in turns:
        if m["role"] == "user":
            pending.append(m["content"])
        else:
            pairs.append(["\n\n".join(pending), m["content"]])
            pending = []
    return pairs


def to_alpaca(rec: dict[str, Any], opts: dict[str, Any] | None = None) -> dict[str, Any]:
    opts = opts or {}
    msgs = rec["messages"]
    kind = rec.get("kind") or "sft"
    if _has_tool_turns(msgs) or _has_tool_turns(rec.get("rejected") or []):
        raise Unrepresentable("tool calls and tool results cannot be written as Alpaca; use --output-format "
                              "messages or sharegpt", "messages")
    system = _system(msgs)
    if kind == "sft":
        pairs = _alpaca_pairs(msgs)
        out: dict[str, Any] = {"instruction": pairs[-1][0], "input": "", "output": pairs[-1][1]}
        history = pairs[:-1]
    else:
        prompt, answer = _split(rec)
        rest = [m for m in prompt if m["role"] != "system"]
        if not rest or rest[-1]["role"] != "user":
            raise Unrepresentable("the prompt does not end on a user turn", "messages")
        pending: list[str] = []
        while rest and rest[-1]["role"] == "user":
            pending.insert(0, rest.pop()["content"])
        history = _alpaca_pairs(rest) if rest else []
        if len(history) * 2 != len(rest):
            raise Unrepresentable("the prompt's earlier turns are not user/assistant pairs", "messages")
        out = {"instruction": "\n\n".join(pending), "input": ""}
        answers = [("output" if kind == "kto" else "chosen", answer)]
        if kind == "preference":
            answers.append(("rejected", rec["rejected"]))
        for key, part in answers:
            if len(part) != 1 or part[0]["role"] != "assistant":
                raise Unrepresentable(f"the {'completion' if key == 'output' else key} answer has {len(part)} "
                                      f"turns; Alpaca holds one", key)
            out[key] = part[0]["content"]
        if kind == "kto":
            out["label"] = rec["label"]
    if system:
        out["system"] = "\n\n".join(system)
    if history:
        out["history"] = history
    if opts.get("tools"):
        out["tools"] = rec.get("tools") or ""
    out["id"], out["source"] = rec["id"], rec["source"]
    return out


CONVERTERS = {"messages": to_messages, "sharegpt": to_sharegpt, "alpaca": to_alpaca}


# ---------------------------------------------------------------- writing

def _kinds(table: pa.Table) -> Counter[str]:
    if "kind" not in table.column_names:
        return Counter({"sft": table.num_rows})
    return Counter({k or "sft": n for k, n in
                    ((v["values"], v["counts"]) for v in pc.value_counts(table.column("kind")).to_pylist())})


def main_kind(table: pa.Table) -> str:
    """The record kind a converted output holds: the most common one (ties: sft, preference, kto)."""
    kinds = _kinds(table)
    order = ("sft", "preference", "kto")
    return max(order, key=lambda k: (kinds.get(k, 0), -order.index(k))) if table.num_rows else "sft"


PLAIN_MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def _plain_view(table: pa.Table) -> pa.Table:
    """``table`` with plain ``{role, content}`` messages when no turn has tool fields (faster to convert)."""
    if "messages" not in table.column_names:
        return table
    col = table.column("messages")
    if col.type == PLAIN_MESSAGES or not pa.types.is_struct(col.type.value_type):
        return table
    values = pc.list_flatten(col)
    for name in ("tool_calls", "tool_call_id", "name"):
        if col.type.value_type.get_field_index(name) >= 0 and any(
                ch.field(name).null_count < len(ch) for ch in values.chunks):
            return table
    return table.set_column(table.column_names.index("messages"), "messages", col.cast(PLAIN_MESSAGES))


def _has_tools(table: pa.Table) -> bool:
    return "tools" in table.column_names and table.column("tools").null_count < table.num_rows


def write_records(table: pa.Table, path: str, fmt: str = "original", file_format: str = "jsonl",
                  rejects: list[dict[str, Any]] | None = None) -> int:
    """Write the rows of a pool table (already in output order). Returns the number written.

    A record that ``fmt`` cannot represent (e.g. tool calls as Alpaca, or a preference pair in an output of
    SFT records) is skipped and appended to ``rejects`` as ``{"id", "source", "file", "row", "line",
    "field", "code": "unrepresentable", "reason"}``; without a ``rejects`` list such a record is an error.
    """
    if fmt != "original" and fmt not in CONVERTERS:
        raise ConfigError(f"unknown output format {fmt!r}; use original, messages, sharegpt or alpaca")
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    tmp = path + ".tmp"
    written = table.num_rows
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
        kind = main_kind(table)
        opts = {"tools": _has_tools(table)}
        skipped: list[dict[str, Any]] = []

        def recs() -> Iterable[dict[str, Any]]:
            needed = {"id", "source", "messages"} | ({"tools"} if opts["tools"] else set()) | (
                {"kind", "label", "rejected", "prompt_turns"} if kind != "sft" or len(_kinds(table)) > 1 else set())
            cols = [c for c in RECORD_COLUMNS if c in needed and c in table.column_names]
            for i, r in enumerate(_iter_rows(_plain_view(table.select(cols)))):
                try:
                    if (r.get("kind") or "sft") != kind:
                        raise Unrepresentable(f"a {fmt} file holds one kind of record and this output holds "
                                              f"{kind} records; this one is {r.get('kind')}", "kind")
                    yield conv(r, opts)
                except Unrepresentable as e:
                    if rejects is None:
                        raise ConfigError(f"record {r['id']} cannot be written as {fmt}: {e.reason}") from None
                    prov = {c: table.column(c)[i].as_py() if c in table.column_names else None
                            for c in ("file", "row", "line")}
                    skipped.append({"id": r["id"], "source": r["source"], **prov, "column": None,
                                    "field": e.field, "code": "unrepresentable",
                                    "reason": f"{fmt} output: {e.reason}", "raw": None})

        try:
            if file_format == "jsonl":
                with open(tmp, "wb") as fh:
                    fh.writelines(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in recs())
            else:
                pq.write_table(table_from_rows(list(recs())), tmp, compression="zstd")
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        written -= len(skipped)
        if rejects is not None:
            rejects.extend(skipped)
    os.replace(tmp, path)
    return written


def dataset_info_entry(fmt: str, file_name: str, table: pa.Table) -> dict[str, Any]:
    """The LLaMA-Factory ``dataset_info.json`` entry for ``table`` written as ``fmt`` to ``file_name``.

    ``sharegpt`` and ``alpaca`` outputs map directly; ``messages`` SFT outputs are read with role/content
    tags (``formatting: openai`` when they hold tool calls, which needs a LLaMA-Factory with the OpenAI
    converter). TRL's preference / KTO layouts of ``messages`` have no LLaMA-Factory equivalent: ValueError.
    """
    if fmt not in CONVERTERS:
        raise ValueError(f"no LLaMA-Factory dataset_info entry for output format {fmt!r}")
    kind = main_kind(table)
    has_tools = _has_tools(table)
    has_system = False
    has_history = False
    if "messages" in table.column_names and table.num_rows:
        roles = pc.list_flatten(table.column("messages")).combine_chunks()
        has_system = bool(pc.any(pc.equal(roles.field("role"), "system")).as_py())
        if fmt == "alpaca":  # history: a record with an earlier assistant turn than its answer
            import numpy as np

            parent = pc.list_parent_indices(table.column("messages")).to_numpy()
            is_asst = pc.equal(roles.field("role"), "assistant").to_numpy(zero_copy_only=False)
            has_history = bool((np.bincount(parent[is_asst], minlength=table.num_rows) > 1).any())
    entry: dict[str, Any] = {"file_name": file_name}
    if fmt == "alpaca":
        entry["formatting"] = "alpaca"
        cols: dict[str, str] = {"prompt": "instruction", "query": "input"}
        if kind == "preference":
            cols.update(chosen="chosen", rejected="rejected")
        else:
            cols["response"] = "output"
        if has_system:
            cols["system"] = "system"
        if has_history:
            cols["history"] = "history"
    elif fmt == "sharegpt":
        entry["formatting"] = "sharegpt"
        cols = {"messages": "conversations"}
        if kind == "preference":
            cols.update(chosen="chosen", rejected="rejected")
        if has_system:
            cols["system"] = "system"
        entry["tags"] = dict(SHAREGPT_TAGS)
    else:
        if kind != "sft":
            raise ValueError("TRL preference / KTO records (messages output) have no LLaMA-Factory layout; "
                             "write sharegpt or alpaca for LLaMA-Factory")
        has_calls = "messages" in table.column_names and table.num_rows and bool(
            pc.any(pc.is_valid(pc.list_flatten(table.column("messages")).combine_chunks().field("tool_calls")))
            .as_py())
        entry["formatting"] = "openai" if has_calls else "sharegpt"
        cols = {"messages": "messages"}
        entry["tags"] = dict(MESSAGES_TAGS)
    if has_tools:
        cols["tools"] = "tools"
    if kind == "kto":
        cols["kto_tag"] = "label"
    if kind == "preference":
        entry["ranking"] = True
    entry["columns"] = cols
    return entry


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
    """Write ``rows`` as JSON Lines, atomically: a temporary file renamed into place locally (``file://``
    too); on an object store (``s3://``, ``gs://``, ...) one PUT of the whole file through siftkit.fs (so
    the file is built in memory first). Returns the number of rows."""
    if _fs.is_remote(path):
        lines = [orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE, default=str) for r in rows]
        try:
            _fs.write_atomic(path, b"".join(lines))
        except OSError as e:
            raise _fs.fs_error(path, e, "cannot write") from None
        return len(lines)
    path = _fs.local_path(path)
    n = 0
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        for r in rows:
            fh.write(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE, default=str))
            n += 1
    os.replace(tmp, path)
    return n
