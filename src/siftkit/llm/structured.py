"""Structured answers: a JSON schema sent as ``response_format`` where the server supports it, strict parsing
always, at most one repair request, and scores read from ``top_logprobs`` when the server returns them.

``structured`` modes: ``json_schema`` (``response_format: {type: json_schema, ...}``: vLLM, SGLang,
llama.cpp and OpenAI constrain decoding to the schema), ``json_object`` (any JSON object) or ``none`` (the
prompt alone asks for JSON). Whatever the mode, the answer is parsed strictly: the text (surrounding
whitespace and one Markdown code fence aside) must be one JSON object with every required key, integers
within the scale, strings where strings are due. Reason codes of answers that are not:

- ``truncated``: the server stopped at ``max_tokens`` (``finish_reason: length``) and the text does not parse;
- ``invalid_json``: not JSON, or JSON but not an object;
- ``bad_schema``: a JSON object, but a key is missing, a score is not a number or is outside the scale.

Scores from log-probabilities (DEITA's rule): at the token that holds a score's value, the candidate tokens
in ``top_logprobs`` that are whole ratings of the scale are renormalised, and the score is the expected
rating ``sum(s * p(s))``. When there are no log-probabilities, or none of the candidates is a rating (or the
value's token is not a single-digit rating), the parsed number is the score.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

OK = ""
TRUNCATED = "truncated"
INVALID_JSON = "invalid_json"
BAD_SCHEMA = "bad_schema"
MODES = ("json_schema", "json_object", "none")
_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?\s*```$", re.DOTALL)


def schema(dimensions: list[str], lo: int, hi: int, rationale_chars: int) -> dict[str, Any]:
    """Object with one integer per dimension (in the scale) and, if ``rationale_chars`` > 0, a rationale
    string after the scores (so a cut answer loses the rationale first)."""
    props: dict[str, Any] = {d: {"type": "integer", "minimum": lo, "maximum": hi} for d in dimensions}
    required = list(dimensions)
    if rationale_chars > 0:
        props["rationale"] = {"type": "string", "maxLength": int(rationale_chars)}
        required.append("rationale")
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def response_format(sch: dict[str, Any], mode: str) -> dict[str, Any] | None:
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "judgement", "strict": True, "schema": sch}}
    if mode == "json_object":
        return {"type": "json_object"}
    return None


def strip_fence(text: str | None) -> str:
    """The text without surrounding whitespace and without a Markdown code fence (```json ... ```) around it."""
    s = (text or "").strip()
    m = _FENCE.match(s)
    return m.group(1).strip() if m else s


def parse(text: str, sch: dict[str, Any], finish_reason: str | None = None) -> tuple[dict[str, Any] | None, str]:
    """(the object, "") or (None, reason code)."""
    s = strip_fence(text)
    try:
        obj = json.loads(s)
    except ValueError:
        return None, TRUNCATED if finish_reason == "length" else INVALID_JSON
    if not isinstance(obj, dict):
        return None, INVALID_JSON
    for key in sch.get("required", []):
        if key not in obj:
            return None, BAD_SCHEMA
    for key, spec in sch.get("properties", {}).items():
        if key not in obj:
            continue
        v = obj[key]
        if spec.get("type") == "integer":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v != int(v):
                return None, BAD_SCHEMA
            if not spec.get("minimum", -math.inf) <= v <= spec.get("maximum", math.inf):
                return None, BAD_SCHEMA
        elif spec.get("type") == "string" and not isinstance(v, str):
            return None, BAD_SCHEMA
    return obj, OK


def repair_message(reason: str, sch: dict[str, Any]) -> str:
    """The follow-up user turn of a repair request (our wording)."""
    why = {TRUNCATED: "was cut off before it ended", INVALID_JSON: "was not a JSON object",
           BAD_SCHEMA: "did not have the required keys and value types"}.get(reason, "could not be read")
    keys = ", ".join(f'"{k}"' for k in sch.get("required", []))
    return (f"Your previous reply {why}. Answer again with only one JSON object, with the keys {keys}, "
            f"matching this JSON schema: {json.dumps(sch, separators=(',', ':'))}. Keep any text short.")


def answer_text(resp: dict[str, Any]) -> tuple[str, str | None]:
    """(text, finish_reason) of the first choice of a chat or completions answer."""
    c = resp["choices"][0]
    text = c["message"]["content"] if isinstance(c.get("message"), dict) else c.get("text", "")
    return text or "", c.get("finish_reason")


def _logprob_tokens(resp: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Per generated token: {"token", "top": [(token, logprob), ...]} (chat or completions layout)."""
    c = resp["choices"][0]
    lp = c.get("logprobs")
    if not isinstance(lp, dict):
        return None
    if isinstance(lp.get("content"), list):          # chat layout
        out = []
        for t in lp["content"]:
            top = [(x.get("token", ""), x.get("logprob")) for x in (t.get("top_logprobs") or [])]
            out.append({"token": t.get("token", ""), "top": top})
        return out
    if isinstance(lp.get("tokens"), list):           # completions layout
        tops = lp.get("top_logprobs") or [None] * len(lp["tokens"])
        return [{"token": tok, "top": list((top or {}).items())} for tok, top in zip(lp["tokens"], tops)]
    return None


def expected_scores(resp: dict[str, Any], text: str, keys: list[str], lo: int, hi: int
                    ) -> dict[str, float | None]:
    """Per key, the expected rating over the rating tokens at the position of its value, or None.

    Positions are found by walking the generated tokens' text: the value of ``"key":`` starts at the first
    digit after the key; the token covering that character is the score token.
    """
    toks = _logprob_tokens(resp)
    out: dict[str, float | None] = {k: None for k in keys}
    if not toks or hi > 9 or lo < 0:
        return out
    joined = "".join(t["token"] for t in toks)
    same = 0                                 # tokens and text agree up to here (a multi-byte character split
    for a, b in zip(joined, text):           # over tokens can garble the rest, e.g. in a rationale)
        if a != b:
            break
        same += 1
    starts, pos = [], 0
    for t in toks:
        starts.append(pos)
        pos += len(t["token"])
    for k in keys:
        m = re.search(r'"' + re.escape(k) + r'"\s*:\s*(-?\d)', text)
        if not m:
            continue
        at = m.start(1)
        if at >= same:                       # cannot align this value with the tokens: the parsed number
            continue
        idx = max(i for i, s in enumerate(starts) if s <= at)
        tok = toks[idx]
        if tok["token"].strip() != text[at] and not (tok["token"].strip().isdigit() and len(tok["token"].strip()) == 1):
            continue                         # the value's token holds more than the digit
        probs: dict[int, float] = {}
        for cand, lp in tok["top"]:
            c = (cand or "").strip()
            if c.isdigit() and len(c) == 1 and lo <= int(c) <= hi and lp is not None and math.isfinite(lp):
                probs[int(c)] = probs.get(int(c), 0.0) + math.exp(lp)
        z = sum(probs.values())
        if z > 0:
            out[k] = sum(s * p for s, p in probs.items()) / z
    return out
