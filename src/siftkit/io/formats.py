"""Format adapters: one raw record (dict, list or row) -> a list of (role, content) turns.

Supported formats (detected per file from its first record, or forced with ``format=``):

========================  =====================================================================
name                      record shape
========================  =====================================================================
``messages``              OpenAI / TRL: ``{"messages": [{"role", "content"}, ...]}``
                          (roles system/developer/user/assistant/tool/function; content may be a
                          string, null with ``tool_calls``, or a list of ``{"type": "text"}`` parts)
``sharegpt``              ``{"conversations": [{"from", "value"}, ...]}``
                          (human/user, gpt/assistant/chatgpt/bard/model, system, function_call,
                          observation/tool/function); a ``system`` key is honoured
``alternating``           ``{"conversations": ["user text", "assistant text", ...]}`` or a bare list
``alpaca``                ``instruction`` + optional ``input`` + ``output`` (or ``response``), optional
                          ``system`` and ``history`` (list of ``[user, assistant]`` pairs)
``prompt_completion``     ``prompt`` + ``completion`` (strings, or lists of messages as in TRL)
``qa``                    ``question`` + ``answer``
``mapping``               explicit user mapping ``{"user": ..., "assistant": ..., "system": ...}``
                          where each value is a field name / column index, or a template such as
                          ``"{question}\\n{options}"`` / ``"{2}"``
========================  =====================================================================
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

Turns = list[tuple[str, str]]

ROLE_ALIASES = {
    "user": "user", "human": "user", "prompter": "user", "question": "user",
    "assistant": "assistant", "gpt": "assistant", "chatgpt": "assistant", "bard": "assistant",
    "bing": "assistant", "model": "assistant", "bot": "assistant", "function_call": "assistant",
    "system": "system", "developer": "system",
    "tool": "tool", "function": "tool", "observation": "tool", "ipython": "tool",
}
VALID_ROLES = ("system", "user", "assistant", "tool")


class RecordError(Exception):
    """A record that does not fit its format; ``field`` names the offending field."""

    def __init__(self, reason: str, field: str | None = None, code: str = "malformed"):
        super().__init__(reason)
        self.reason, self.field, self.code = reason, field, code


def _text(value: Any, field: str) -> str:
    if type(value) is str:
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        raise RecordError("expected text, got a boolean", field)
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):  # OpenAI content parts
        parts = []
        for p in value:
            if isinstance(p, dict) and p.get("type", "text") == "text" and isinstance(p.get("text"), str):
                parts.append(p["text"])
            elif isinstance(p, str):
                parts.append(p)
            else:
                raise RecordError("content parts other than text are not supported", field)
        return "".join(parts)
    raise RecordError(f"expected text, got {type(value).__name__}", field)


def _role(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise RecordError(f"role must be a string, got {type(value).__name__}", field)
    r = ROLE_ALIASES.get(value.strip().lower())
    if r is None:
        raise RecordError(f"unknown role {value!r}", field)
    return r


def _require(rec: Mapping, key: str) -> Any:
    if type(rec) is not dict and not isinstance(rec, Mapping):
        raise RecordError(f"expected an object, got {type(rec).__name__}")
    if key not in rec:
        raise RecordError(f"missing field '{key}'", key)
    return rec[key]


def adapt_messages(rec: Mapping, key: str = "messages") -> Turns:
    msgs = _require(rec, key)
    if not isinstance(msgs, list):
        raise RecordError(f"'{key}' must be a list", key)
    out: Turns = []
    for i, m in enumerate(msgs):
        f = f"{key}[{i}]"
        if not isinstance(m, Mapping):
            raise RecordError("each message must be an object with role and content", f)
        if "role" not in m:
            raise RecordError("message has no 'role'", f)
        content = _text(m.get("content"), f + ".content")
        calls = m.get("tool_calls")
        if calls:
            content = (content + "\n" if content else "") + orjson.dumps(calls).decode()
        out.append((_role(m["role"], f + ".role"), content))
    return out


def adapt_sharegpt(rec: Mapping, key: str = "conversations") -> Turns:
    conv = _require(rec, key)
    if not isinstance(conv, list):
        raise RecordError(f"'{key}' must be a list", key)
    out: Turns = []
    sys_prompt = rec.get("system")
    if isinstance(sys_prompt, str) and sys_prompt.strip():
        out.append(("system", sys_prompt))
    for i, m in enumerate(conv):
        f = f"{key}[{i}]"
        if not isinstance(m, Mapping):
            raise RecordError("each turn must be an object with from/value", f)
        role_key = "from" if "from" in m else "role" if "role" in m else None
        val_key = "value" if "value" in m else "content" if "content" in m else None
        if role_key is None or val_key is None:
            raise RecordError("turn needs 'from' and 'value'", f)
        out.append((_role(m[role_key], f + "." + role_key), _text(m[val_key], f + "." + val_key)))
    return out


def adapt_alternating(rec: Any, key: str = "conversations") -> Turns:
    conv = rec if isinstance(rec, list) else _require(rec, key)
    if not isinstance(conv, list):
        raise RecordError(f"'{key}' must be a list of strings", key)
    return [("user" if i % 2 == 0 else "assistant", _text(t, f"{key}[{i}]")) for i, t in enumerate(conv)]


def adapt_alpaca(rec: Mapping) -> Turns:
    instr = _require(rec, "instruction")
    if type(instr) is not str:
        instr = _text(instr, "instruction")
    out = rec.get("output", _MISSING)
    if out is _MISSING:
        out = rec.get("response", _MISSING)
        if out is _MISSING:
            raise RecordError("missing field 'output' (or 'response')", "output")
        out_key = "response"
    else:
        out_key = "output"
    if type(out) is not str:
        out = _text(out, out_key)
    inp = rec.get("input")
    user = instr
    if inp:
        if type(inp) is not str:
            inp = _text(inp, "input")
        if inp.strip():
            user = f"{instr}\n\n{inp}" if instr else inp
    system = rec.get("system")
    hist = rec.get("history")
    if not system and not hist:
        return [("user", user), ("assistant", out)]
    turns: Turns = []
    if isinstance(system, str) and system.strip():
        turns.append(("system", system))
    if hist:
        if not isinstance(hist, list):
            raise RecordError("'history' must be a list of [user, assistant] pairs", "history")
        for i, pair in enumerate(hist):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise RecordError("each history item must be a [user, assistant] pair", f"history[{i}]")
            turns.append(("user", _text(pair[0], f"history[{i}][0]")))
            turns.append(("assistant", _text(pair[1], f"history[{i}][1]")))
    turns.append(("user", user))
    turns.append(("assistant", out))
    return turns


def adapt_prompt_completion(rec: Mapping) -> Turns:
    prompt = _require(rec, "prompt")
    completion = _require(rec, "completion")
    turns: Turns = []
    if isinstance(prompt, list):
        turns.extend(adapt_messages({"prompt": prompt}, "prompt"))
    else:
        turns.append(("user", _text(prompt, "prompt")))
    if isinstance(completion, list):
        turns.extend(adapt_messages({"completion": completion}, "completion"))
    else:
        turns.append(("assistant", _text(completion, "completion")))
    return turns


def adapt_qa(rec: Mapping) -> Turns:
    return [("user", _text(_require(rec, "question"), "question")),
            ("assistant", _text(_require(rec, "answer"), "answer"))]


_MISSING = object()
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


def make_mapping_adapter(mapping: Mapping[str, Any]) -> Callable[[Any], Turns]:
    """Build an adapter from ``{"user": spec, "assistant": spec, "system": spec?}``.

    A spec is a field name or column index (``"question"``, ``0``, ``"0"``) or a template with
    ``{field}`` placeholders (``"{2}\\nSo the answer is {1}."``). Records may be dicts or lists (rows).
    """
    unknown = set(mapping) - {"user", "assistant", "system"}
    if unknown:
        from ..errors import ConfigError

        raise ConfigError(f"mapping keys must be user/assistant/system, got {sorted(unknown)}")
    if "user" not in mapping or "assistant" not in mapping:
        from ..errors import ConfigError

        raise ConfigError("a mapping needs at least 'user' and 'assistant'")

    def getter(spec: Any) -> Callable[[Any], str]:
        spec_s = str(spec)
        if _PLACEHOLDER.search(spec_s):
            keys = _PLACEHOLDER.findall(spec_s)
            pieces = _PLACEHOLDER.split(spec_s)  # literal, key, literal, key, ...

            def render(rec: Any) -> str:
                out = []
                for i, p in enumerate(pieces):
                    out.append(_field(rec, p) if i % 2 else p)
                return "".join(out)

            del keys
            return render
        return lambda rec: _field(rec, spec_s)

    order = [r for r in ("system", "user", "assistant") if r in mapping]
    getters = [(r, getter(mapping[r])) for r in order]

    def adapt(rec: Any) -> Turns:
        turns = [(r, g(rec)) for r, g in getters]
        return [(r, t) for r, t in turns if not (r == "system" and not t.strip())]

    return adapt


def _field(rec: Any, key: str) -> str:
    if isinstance(rec, (list, tuple)):
        try:
            idx = int(key)
        except ValueError:
            raise RecordError(f"row has no header; map columns by index, not '{key}'", key) from None
        if idx >= len(rec) or idx < -len(rec):
            raise RecordError(f"row has {len(rec)} columns, no column {idx}", key)
        return _text(rec[idx], key)
    if isinstance(rec, Mapping):
        if key not in rec:
            raise RecordError(f"missing field '{key}'", key)
        return _text(rec[key], key)
    raise RecordError(f"expected an object or a row, got {type(rec).__name__}")


ADAPTERS: dict[str, Callable[[Any], Turns]] = {
    "messages": adapt_messages,
    "sharegpt": adapt_sharegpt,
    "alternating": adapt_alternating,
    "alpaca": adapt_alpaca,
    "prompt_completion": adapt_prompt_completion,
    "qa": adapt_qa,
}
FORMATS = tuple(ADAPTERS) + ("mapping",)


def detect_format(rec: Any) -> str | None:
    """Guess a record's format from its keys; None when nothing fits."""
    if isinstance(rec, list):
        return "alternating" if all(isinstance(x, str) for x in rec) else None
    if not isinstance(rec, Mapping):
        return None
    if isinstance(rec.get("messages"), list):
        return "messages"
    conv = rec.get("conversations")
    if isinstance(conv, list):
        first = conv[0] if conv else None
        if isinstance(first, str):
            return "alternating"
        if isinstance(first, Mapping) and ("from" in first or "value" in first):
            return "sharegpt"
        if isinstance(first, Mapping) and "role" in first:
            return "sharegpt"  # role/content inside 'conversations' is handled by the sharegpt adapter
        return "sharegpt"
    if "instruction" in rec and ("output" in rec or "response" in rec):
        return "alpaca"
    if "prompt" in rec and "completion" in rec:
        return "prompt_completion"
    if "question" in rec and "answer" in rec:
        return "qa"
    return None


def validate_turns(turns: Turns) -> tuple[str, str] | None:
    """Return (code, reason) when a conversation is unusable for SFT, else None."""
    if len(turns) == 2 and turns[0][0] == "user" and turns[1][0] == "assistant":  # fast path
        if not turns[1][1].strip():
            return "empty_response", "the last assistant turn is empty"
        if not turns[0][1].strip():
            return "no_user_turn", "no non-empty user turn before the last assistant turn"
        return None
    if not turns:
        return "empty_conversation", "conversation has no turns"
    last_asst = None
    for i in range(len(turns) - 1, -1, -1):
        if turns[i][0] == "assistant":
            last_asst = i
            break
    if last_asst is None:
        return "no_assistant_turn", "conversation has no assistant turn"
    if not turns[last_asst][1].strip():
        return "empty_response", "the last assistant turn is empty"
    if not any(r == "user" and c.strip() for r, c in turns[:last_asst]):
        return "no_user_turn", "no non-empty user turn before the last assistant turn"
    return None
