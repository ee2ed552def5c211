"""Format adapters: one raw record (dict, list or row) -> turns (and, for tools/preference/KTO, an Adapted).

Supported formats (detected per file from its first record, or forced with ``format=``):

========================  =====================================================================
name                      record shape
========================  =====================================================================
``messages``              OpenAI / TRL: ``{"messages": [{"role", "content"}, ...], "tools"?}``
                          (roles system/developer/user/assistant/tool/function; content may be a
                          string, null with ``tool_calls``, or a list of text parts; assistant
                          ``tool_calls`` / legacy ``function_call``; tool turns' ``tool_call_id``)
``sharegpt``              ``{"conversations": [{"from", "value"}, ...], "system"?, "tools"?}``
                          (human/user, gpt/assistant/chatgpt/bard/model, system, function_call,
                          observation/tool/function)
``alternating``           ``{"conversations": ["user text", "assistant text", ...]}`` or a bare list
``alpaca``                ``instruction`` + optional ``input`` + ``output`` (or ``response``), optional
                          ``system`` and ``history`` (list of ``[user, assistant]`` pairs)
``prompt_completion``     ``prompt`` + ``completion`` (strings, or lists of messages as in TRL)
``qa``                    ``question`` + ``answer``
``preference``            ``chosen`` + ``rejected``: LLaMA-Factory ranking (``conversations`` or
                          ``messages`` + one message object each, or alpaca ``instruction`` + strings),
                          TRL explicit (``prompt``) or implicit prompt (message lists), Anthropic HH
                          strings ("\\n\\nHuman: ... \\n\\nAssistant: ..."), ms-swift ``messages`` +
                          ``rejected_response``, MedicalGPT ``question`` + ``response_chosen``/``_rejected``
``kto``                   a boolean ``label`` (or LLaMA-Factory ``kto_tag``) on ``prompt``/``completion``,
                          ``messages``, ``conversations`` or alpaca records
``mapping``               explicit user mapping ``{"user": ..., "assistant": ..., "system": ...}``
                          where each value is a field name / column index, or a template such as
                          ``"{question}\\n{options}"`` / ``"{2}"``
========================  =====================================================================

A turn is ``(role, content)``, or ``(role, content, tool_calls, tool_call_id, name)`` when it carries a tool
call (``tool_calls``: list of ``{"id", "name", "arguments"}``, arguments a JSON string) or answers one.
Adapters return a plain list of turns for ordinary SFT records and an ``Adapted`` when the record has
record-level data: ``tools`` definitions, or a preference / KTO kind. See docs/formats.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

Turn = tuple  # (role, content) or (role, content, tool_calls, tool_call_id, name)
Turns = list[tuple]

ROLE_ALIASES = {
    "user": "user", "human": "user", "prompter": "user", "question": "user",
    "assistant": "assistant", "gpt": "assistant", "chatgpt": "assistant", "bard": "assistant",
    "bing": "assistant", "model": "assistant", "bot": "assistant", "function_call": "assistant",
    "system": "system", "developer": "system",
    "tool": "tool", "function": "tool", "observation": "tool", "ipython": "tool",
    "tool_call": "assistant", "tool_response": "tool",  # ms-swift agent turns
}
CALL_ROLES = ("function_call", "tool_call")  # raw roles whose content is the call(s) as JSON
VALID_ROLES = ("system", "user", "assistant", "tool")
# raw role names whose turns are always plain (role, content): the fast path of the message readers
_PLAIN_ROLES = {k: v for k, v in ROLE_ALIASES.items() if v != "tool" and k not in CALL_ROLES}
KINDS = ("sft", "preference", "kto")
TEXT_KEYS = ("text", "value", "content")  # text parts: {"type": "text", KEY: "..."} in every spelling seen


class RecordError(Exception):
    """A record that does not fit its format; ``field`` names the offending field."""

    def __init__(self, reason: str, field: str | None = None, code: str = "malformed"):
        super().__init__(reason)
        self.reason, self.field, self.code = reason, field, code


@dataclass(slots=True)
class Adapted:
    """An adapted record with more than turns. ``turns`` = prompt + chosen (preference) or prompt +
    completion (KTO); ``prompt_turns`` = how many leading turns form the prompt (None for SFT)."""

    turns: Turns
    tools: str | None = None
    kind: str = "sft"
    label: bool | None = None
    rejected: Turns | None = None
    prompt_turns: int | None = None


def _text(value: Any, field: str) -> str:
    if type(value) is str:
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        raise RecordError("expected text, got a boolean", field)
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):  # content parts
        parts = []
        for i, p in enumerate(value):
            if isinstance(p, str):
                parts.append(p)
                continue
            f = f"{field}[{i}]"
            if not isinstance(p, Mapping):
                raise RecordError(f"{f}: a content part must be a string or an object, got {type(p).__name__}", f)
            ptype = p.get("type", "text")
            if ptype == "text":
                for k in TEXT_KEYS:
                    if type(p.get(k)) is str:
                        parts.append(p[k])
                        break
                else:
                    raise RecordError(f"{f}: text part has no string 'text' (or 'value'/'content')", f)
            else:
                raise RecordError(f"{f}: {ptype} parts are not supported (only text)", f,
                                  code="unsupported_content")
        return "".join(parts)
    raise RecordError(f"expected text, got {type(value).__name__}", field)


def _arguments(value: Any, field: str) -> str:
    """Tool-call arguments as a JSON string (strings are kept exactly; objects are serialised)."""
    if type(value) is str:
        return value
    if value is None:
        return "{}"
    if isinstance(value, (Mapping, list)):
        return orjson.dumps(value).decode()
    raise RecordError(f"tool-call arguments must be a JSON string or an object, got {type(value).__name__}",
                      field)


def _call(c: Any, field: str) -> dict[str, Any]:
    """One tool call: OpenAI ``{"id", "type": "function", "function": {"name", "arguments"}}`` or flat
    ``{"name", "arguments"}`` (ShareGPT ``function_call`` values, legacy OpenAI ``function_call``)."""
    if not isinstance(c, Mapping):
        raise RecordError(f"a tool call must be an object, got {type(c).__name__}", field)
    fn = c.get("function") if isinstance(c.get("function"), Mapping) else c
    name = fn.get("name")
    if type(name) is not str or not name:
        raise RecordError("tool call has no 'name'", field)
    cid = c.get("id")
    if cid is not None and type(cid) is not str:
        cid = str(cid)
    return {"id": cid, "name": name, "arguments": _arguments(fn.get("arguments"), field + ".arguments")}


def _calls(value: Any, field: str) -> list[dict[str, Any]]:
    if isinstance(value, Mapping):
        return [_call(value, field)]
    if not isinstance(value, list):
        raise RecordError(f"tool calls must be a list, got {type(value).__name__}", field)
    return [_call(c, f"{field}[{i}]") for i, c in enumerate(value)]


def _function_call_value(value: Any, field: str) -> list[dict[str, Any]]:
    """A ShareGPT ``function_call`` turn's value: JSON ``{"name", "arguments"}`` or a list of them."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise RecordError("function_call value is not JSON {\"name\", \"arguments\"}", field) from None
    calls = _calls(value, field)
    if not calls:
        raise RecordError("function_call turn holds no call", field)
    return calls


def _tools(value: Any, field: str = "tools") -> str | None:
    """Tool definitions as a JSON string (None when there are none)."""
    if value is None or value == "" or value == [] or value == {}:
        return None
    if isinstance(value, str):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise RecordError("'tools' is not valid JSON", field) from None
        if not isinstance(parsed, (list, Mapping)):
            raise RecordError("'tools' must be a JSON list of tool definitions", field)
        return value if parsed else None
    if isinstance(value, (list, Mapping)):
        return orjson.dumps(value).decode()
    raise RecordError(f"'tools' must be a list or a JSON string, got {type(value).__name__}", field)


def render_tool_calls(calls: list[dict[str, Any]]) -> str:
    """Compact text of tool calls (one ``name(arguments)`` a line): what signals see of a call."""
    return "\n".join(f"{c['name']}({c['arguments']})" for c in calls)


def message_text(m: Mapping[str, Any]) -> str:
    """``turn_text`` of a canonical message dict (``{role, content, tool_calls?, ...}``)."""
    calls = m.get("tool_calls")
    if calls:
        r = render_tool_calls(calls)
        return f"{m['content']}\n{r}" if m["content"] else r
    return m["content"]


def turn_text(turn: tuple) -> str:
    """The text a turn contributes to signals: its content plus, for a tool-call turn, the calls."""
    if len(turn) > 2 and turn[2]:
        calls = render_tool_calls(turn[2])
        return f"{turn[1]}\n{calls}" if turn[1] else calls
    return turn[1]


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


def _guard_sft(rec: Mapping) -> None:
    """An SFT adapter never silently reads a preference pair or a KTO record as SFT."""
    # A key holding null (e.g. siftkit's own canonical table, read back) is not a pair.
    if not any(rec.get(k) is not None for k in ("chosen", "rejected", "label", "kto_tag", "rejected_response",
                                                 "response_rejected")):
        return
    for k in ("chosen", "rejected", "rejected_response", "response_rejected"):
        if rec.get(k) is not None:
            raise RecordError(f"record has a '{k}' answer (a preference pair); read it with format 'preference'",
                              k, code="preference_record")
    if type(rec.get("label")) is bool or type(rec.get("kto_tag")) is bool:
        raise RecordError("record has a boolean KTO label; read it with format 'kto'",
                          "label" if "label" in rec else "kto_tag", code="kto_record")


def _message(m: Any, f: str, role_key: str, val_key: str) -> tuple:
    """One message (``role_key``/``val_key`` already checked present, or content optional)."""
    raw_role = m[role_key]
    role = _role(raw_role, f + "." + role_key)
    if raw_role in CALL_ROLES:  # ShareGPT / LLaMA-Factory / ms-swift: the value is the call(s) as JSON
        return (role, "", _function_call_value(m.get(val_key), f + "." + val_key), None, None)
    content = _text(m.get(val_key), f + "." + val_key)
    calls = m.get("tool_calls")
    fc = m.get("function_call")
    if calls or fc:
        if role != "assistant":
            raise RecordError(f"only assistant turns can make tool calls, not {role}", f + ".tool_calls")
        parsed = _calls(calls, f + ".tool_calls") if calls else [_call(fc, f + ".function_call")]
        return (role, content, parsed, None, None)
    if role == "tool":
        tcid, name = m.get("tool_call_id"), m.get("name")
        if tcid is not None or name is not None:
            return (role, content, None, None if tcid is None else str(tcid), None if name is None else str(name))
    return (role, content)


def _message_list(msgs: Any, key: str) -> Turns:
    """OpenAI-style messages (``role`` + ``content``; ``content`` may be missing or null)."""
    if not isinstance(msgs, list):
        raise RecordError(f"'{key}' must be a list", key)
    out: Turns = []
    for i, m in enumerate(msgs):
        f = f"{key}[{i}]"
        if not isinstance(m, Mapping):
            raise RecordError("each message must be an object with role and content", f)
        if "role" not in m:
            raise RecordError("message has no 'role'", f)
        role = _PLAIN_ROLES.get(m["role"]) if type(m["role"]) is str else None
        if role is not None and "tool_calls" not in m and "function_call" not in m:
            out.append((role, _text(m.get("content"), f + ".content")))
        else:
            out.append(_message(m, f, "role", "content"))
    return out


def _sharegpt_turn(m: Any, f: str) -> tuple:
    if not isinstance(m, Mapping):
        raise RecordError("each turn must be an object with from/value", f)
    role_key = "from" if "from" in m else "role" if "role" in m else None
    val_key = "value" if "value" in m else "content" if "content" in m else None
    if role_key is None or val_key is None:
        raise RecordError("turn needs 'from' and 'value'", f)
    role = _PLAIN_ROLES.get(m[role_key]) if type(m[role_key]) is str else None
    if role is not None and "tool_calls" not in m:
        return (role, _text(m[val_key], f + "." + val_key))
    return _message(m, f, role_key, val_key)


def _sharegpt_list(conv: Any, key: str) -> Turns:
    if not isinstance(conv, list):
        raise RecordError(f"'{key}' must be a list", key)
    return [_sharegpt_turn(m, f"{key}[{i}]") for i, m in enumerate(conv)]


def _system_turns(rec: Mapping) -> Turns:
    sys_prompt = rec.get("system")
    if isinstance(sys_prompt, str) and sys_prompt.strip():
        return [("system", sys_prompt)]
    return []


def _with_tools(rec: Mapping, turns: Turns) -> Turns | Adapted:
    tools = _tools(rec["tools"]) if "tools" in rec else None
    return Adapted(turns, tools) if tools is not None else turns


def adapt_messages(rec: Mapping, key: str = "messages") -> Turns | Adapted:
    msgs = _require(rec, key)
    _guard_sft(rec)
    return _with_tools(rec, _message_list(msgs, key))


def adapt_sharegpt(rec: Mapping, key: str = "conversations") -> Turns | Adapted:
    conv = _require(rec, key)
    _guard_sft(rec)
    return _with_tools(rec, _system_turns(rec) + _sharegpt_list(conv, key))


def adapt_alternating(rec: Any, key: str = "conversations") -> Turns:
    conv = rec if isinstance(rec, list) else _require(rec, key)
    if not isinstance(conv, list):
        raise RecordError(f"'{key}' must be a list of strings", key)
    return [("user" if i % 2 == 0 else "assistant", _text(t, f"{key}[{i}]")) for i, t in enumerate(conv)]


def _alpaca_prompt(rec: Mapping) -> Turns:
    """System, history pairs and the user turn (instruction + input) of an Alpaca record."""
    instr = _require(rec, "instruction")
    if type(instr) is not str:
        instr = _text(instr, "instruction")
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
        return [("user", user)]
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
    return turns


def _alpaca_output(rec: Mapping) -> str:
    out = rec.get("output", _MISSING)
    if out is _MISSING:
        out = rec.get("response", _MISSING)
        if out is _MISSING:
            raise RecordError("missing field 'output' (or 'response')", "output")
        out_key = "response"
    else:
        out_key = "output"
    return out if type(out) is str else _text(out, out_key)


def adapt_alpaca(rec: Mapping) -> Turns | Adapted:
    turns = _alpaca_prompt(rec)
    out = _alpaca_output(rec)
    _guard_sft(rec)
    turns.append(("assistant", out))
    return _with_tools(rec, turns)


def _prompt_part(value: Any, field: str) -> Turns:
    return _message_list(value, field) if isinstance(value, list) else [("user", _text(value, field))]


def _answer_part(value: Any, field: str) -> Turns:
    """A completion / chosen / rejected answer: a string, one message object or a list of messages."""
    if isinstance(value, list):
        return _message_list(value, field) if not value or isinstance(value[0], Mapping) and "role" in value[0] \
            else _sharegpt_list(value, field)
    if isinstance(value, Mapping):
        return [_sharegpt_turn(value, field)]
    return [("assistant", _text(value, field))]


def adapt_prompt_completion(rec: Mapping) -> Turns | Adapted:
    prompt = _require(rec, "prompt")
    completion = _require(rec, "completion")
    _guard_sft(rec)
    if type(prompt) is str and type(completion) is str and "tools" not in rec:  # fast path
        return [("user", prompt), ("assistant", completion)]
    turns = _prompt_part(prompt, "prompt") + _answer_part(completion, "completion")
    return _with_tools(rec, turns)


def adapt_qa(rec: Mapping) -> Turns:
    return [("user", _text(_require(rec, "question"), "question")),
            ("assistant", _text(_require(rec, "answer"), "answer"))]


_HH = re.compile(r"(?:^|\n\n)(Human|Assistant):[ ]?")


def _hh_turns(text: str, field: str) -> Turns:
    """Anthropic HH text: ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` -> turns."""
    parts = _HH.split(text)
    if parts[0].strip():
        raise RecordError("text before the first 'Human:' / 'Assistant:' marker", field)
    return [("user" if parts[i] == "Human" else "assistant", parts[i + 1]) for i in range(1, len(parts) - 1, 2)]


def _is_hh(value: Any) -> bool:
    return isinstance(value, str) and ("\n\nHuman:" in value or value.startswith("Human:"))


def _split_common(chosen: Turns, rejected: Turns) -> tuple[Turns, Turns, Turns]:
    """Implicit prompt: the longest common leading turns of chosen and rejected."""
    k = 0
    while k < min(len(chosen), len(rejected)) and chosen[k] == rejected[k]:
        k += 1
    while k > 0 and chosen[k - 1][0] == "assistant" and k < len(chosen) and chosen[k][0] == "assistant":
        k -= 1  # never split inside a run of assistant turns
    return chosen[:k], chosen[k:], rejected[k:]


def adapt_preference(rec: Mapping) -> Adapted:
    """A preference pair -> ``Adapted(prompt + chosen, rejected=..., prompt_turns=len(prompt))``."""
    if isinstance(rec, Mapping) and "rejected_response" in rec:  # ms-swift: messages end on the chosen answer
        key = "messages" if "messages" in rec else "conversations"
        turns = _system_turns(rec) + _sharegpt_list(_require(rec, key), key)
        if not turns or turns[-1][0] != "assistant":
            raise RecordError("with 'rejected_response' the conversation must end on the chosen assistant answer",
                              key, code="empty_chosen")
        rejected = [("assistant", _text(rec["rejected_response"], "rejected_response"))]
        tools = _tools(rec["tools"]) if "tools" in rec else None
        return Adapted(turns, tools, "preference", None, rejected, len(turns) - 1)
    if isinstance(rec, Mapping) and "response_chosen" in rec:  # MedicalGPT: system, history, question
        prompt = _alpaca_prompt({"instruction": _require(rec, "question"), "system": rec.get("system"),
                                 "history": rec.get("history")})
        return Adapted(prompt + [("assistant", _text(rec["response_chosen"], "response_chosen"))], None,
                       "preference", None,
                       [("assistant", _text(_require(rec, "response_rejected"), "response_rejected"))], len(prompt))
    ch = _require(rec, "chosen")
    rj = _require(rec, "rejected")
    conv_key = "conversations" if "conversations" in rec else "messages" if "messages" in rec else None
    if conv_key is not None:  # LLaMA-Factory ranking (sharegpt or openai tags): prompt + one message each
        prompt = _system_turns(rec) + _sharegpt_list(rec[conv_key], conv_key)
        chosen, rejected = _answer_part(ch, "chosen"), _answer_part(rj, "rejected")
    elif "instruction" in rec:  # LLaMA-Factory alpaca ranking
        prompt = _alpaca_prompt(rec)
        chosen, rejected = _answer_part(ch, "chosen"), _answer_part(rj, "rejected")
    elif "prompt" in rec:  # TRL explicit prompt
        prompt = _system_turns(rec) + _prompt_part(rec["prompt"], "prompt")
        chosen, rejected = _answer_part(ch, "chosen"), _answer_part(rj, "rejected")
    elif isinstance(ch, list) and isinstance(rj, list):  # TRL implicit prompt (conversational)
        prompt, chosen, rejected = _split_common(_answer_part(ch, "chosen"), _answer_part(rj, "rejected"))
    elif _is_hh(ch) and _is_hh(rj):  # Anthropic HH
        prompt, chosen, rejected = _split_common(_hh_turns(ch, "chosen"), _hh_turns(rj, "rejected"))
    else:
        raise RecordError("a preference pair needs a prompt ('prompt', 'conversations', 'messages' or "
                          "'instruction'), message lists, or Human:/Assistant: transcripts", "chosen")
    tools = _tools(rec["tools"]) if "tools" in rec else None
    return Adapted(prompt + chosen, tools, "preference", None, rejected, len(prompt))


def adapt_kto(rec: Mapping) -> Adapted:
    """A KTO record (boolean ``label``/``kto_tag``; true = desirable) -> ``Adapted(kind='kto')``."""
    if not isinstance(rec, Mapping):
        raise RecordError(f"expected an object, got {type(rec).__name__}")
    key = "label" if "label" in rec else "kto_tag" if "kto_tag" in rec else None
    if key is None:
        raise RecordError("missing field 'label' (KTO: true = desirable, false = undesirable)", "label")
    label = rec[key]
    if type(label) is not bool:
        raise RecordError(f"'{key}' must be true or false, got {label!r}"[:200], key)
    if "chosen" in rec or "rejected" in rec:
        raise RecordError("a KTO record has one answer, not 'chosen'/'rejected'", "chosen")
    if "prompt" in rec and "completion" in rec:
        prompt = _system_turns(rec) + _prompt_part(rec["prompt"], "prompt")
        turns = prompt + _answer_part(rec["completion"], "completion")
        n_prompt = len(prompt)
    else:
        if isinstance(rec.get("messages"), list):
            turns = _message_list(rec["messages"], "messages")
        elif isinstance(rec.get("conversations"), list):
            turns = _system_turns(rec) + _sharegpt_list(rec["conversations"], "conversations")
        elif "instruction" in rec:
            turns = _alpaca_prompt(rec) + [("assistant", _alpaca_output(rec))]
        else:
            raise RecordError("a KTO record needs prompt/completion, messages, conversations or instruction/output")
        n_prompt = len(turns) - 1  # LLaMA-Factory: the last message is the answer the label judges
    tools = _tools(rec["tools"]) if "tools" in rec else None
    return Adapted(turns, tools, "kto", label, None, max(n_prompt, 0))


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


ADAPTERS: dict[str, Callable[[Any], Turns | Adapted]] = {
    "messages": adapt_messages,
    "sharegpt": adapt_sharegpt,
    "alternating": adapt_alternating,
    "alpaca": adapt_alpaca,
    "prompt_completion": adapt_prompt_completion,
    "qa": adapt_qa,
    "preference": adapt_preference,
    "kto": adapt_kto,
}
FORMATS = tuple(ADAPTERS) + ("mapping",)


def detect_format(rec: Any) -> str | None:
    """Guess a record's format from its keys; None when nothing fits."""
    if isinstance(rec, list):
        return "alternating" if all(isinstance(x, str) for x in rec) else None
    if not isinstance(rec, Mapping):
        return None
    if type(rec.get("label")) is bool or type(rec.get("kto_tag")) is bool:
        return "kto"
    def has(k: str) -> bool:
        return rec.get(k) is not None

    if (has("chosen") and has("rejected")) or has("rejected_response") or (
            has("response_chosen") and has("response_rejected")):
        return "preference"
    if isinstance(rec.get("messages"), list):
        return "messages"
    conv = rec.get("conversations")
    if isinstance(conv, list):
        first = conv[0] if conv else None
        if isinstance(first, str):
            return "alternating"
        return "sharegpt"  # from/value, or role/content inside 'conversations' (handled by the sharegpt adapter)
    if "instruction" in rec and ("output" in rec or "response" in rec):
        return "alpaca"
    if "prompt" in rec and "completion" in rec:
        return "prompt_completion"
    if "question" in rec and "answer" in rec:
        return "qa"
    return None


def _filled(t: tuple) -> bool:
    """A turn with text or tool calls."""
    return bool(t[1].strip()) or (len(t) > 2 and bool(t[2]))


def validate_turns(turns: Turns, rejected: Turns | None = None,
                   prompt_turns: int | None = None) -> tuple[str, str] | None:
    """Return (code, reason) when a conversation is unusable, else None.

    SFT: needs an assistant turn, the last one non-empty (text or tool calls), and a non-empty user turn
    before it. Preference / KTO (``prompt_turns`` given): the chosen answer (or KTO completion,
    ``turns[prompt_turns:]``) and the ``rejected`` answer must each hold a non-empty assistant turn.
    """
    if prompt_turns is not None:
        what = "chosen" if rejected is not None else "completion"
        cont = turns[prompt_turns:]
        if not cont or cont[0][0] != "assistant" or not any(t[0] == "assistant" and _filled(t) for t in cont):
            return f"empty_{what}", f"the {what} answer is empty (or does not start with an assistant turn)"
        if rejected is not None and (not rejected or rejected[0][0] != "assistant"
                                     or not any(t[0] == "assistant" and _filled(t) for t in rejected)):
            return "empty_rejected", "the rejected answer is empty (or does not start with an assistant turn)"
        if not any(t[0] == "user" and t[1].strip() for t in turns[:prompt_turns]):
            return "no_user_turn", "the prompt has no non-empty user turn"
    if len(turns) == 2 and turns[0][0] == "user" and turns[1][0] == "assistant":  # fast path
        if not turns[1][1].strip() and not (len(turns[1]) > 2 and turns[1][2]):
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
    if not _filled(turns[last_asst]):
        return "empty_response", "the last assistant turn is empty"
    if not any(t[0] == "user" and t[1].strip() for t in turns[:last_asst]):
        return "no_user_turn", "no non-empty user turn before the last assistant turn"
    return None
