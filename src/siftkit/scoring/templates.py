"""Render conversations to text with exact character spans of every turn's content.

``template`` is ``"auto"`` (the tokenizer's chat template, or ``plain`` when it has none), ``"chat"``
(the chat template, an error when there is none) or a named template: ``plain``, ``alpaca``, ``vicuna``,
``chatml``. Named templates are built piece by piece, so spans are exact; with a chat template each turn's
content is located in the rendered text in order (an error if the template rewrites a content).
Spans are mapped to token positions through the fast tokenizer's character offsets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

NAMED = ("plain", "alpaca", "vicuna", "chatml")
TEMPLATES = ("auto", "chat") + NAMED

_ALPACA_PREAMBLE = ("Below is an instruction that describes a task. Write a response that appropriately "
                    "completes the request.\n\n")
_VICUNA_PREAMBLE = ("A chat between a curious user and an artificial intelligence assistant. The assistant "
                    "gives helpful, detailed, and polite answers to the user's questions.")

# role -> (header, footer) around the content; "gen" is the assistant header alone
_NAMED: dict[str, dict[str, tuple[str, str]]] = {
    "plain": {"system": ("", "\n\n"), "user": ("User: ", "\n\n"), "assistant": ("Assistant: ", "\n\n"),
              "tool": ("Tool: ", "\n\n")},
    "alpaca": {"system": ("", "\n\n"), "user": ("### Instruction:\n", "\n\n"),
               "assistant": ("### Response:\n", "\n\n"), "tool": ("### Input:\n", "\n\n")},
    "vicuna": {"system": ("", " "), "user": ("USER: ", " "), "assistant": ("ASSISTANT: ", "</s>"),
               "tool": ("TOOL: ", " ")},
    "chatml": {r: (f"<|im_start|>{r}\n", "<|im_end|>\n") for r in ("system", "user", "assistant", "tool")},
}


class TemplateError(ValueError):
    """A conversation the template cannot render (a per-record failure, not a config error)."""


@dataclass
class Rendered:
    text: str
    spans: list[tuple[int, int]]   # char span of each message's content, aligned with the messages
    special: bool                  # whether the tokenizer should add its special tokens (BOS)


def check_template(template: str) -> None:
    if template not in TEMPLATES:
        raise ConfigError(f"template {template!r} is not one of {', '.join(TEMPLATES)}")


def resolve(template: str, tokenizer: Any) -> str:
    """The concrete template used with this tokenizer ("chat" or a named one)."""
    check_template(template)
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if template == "auto":
        return "chat" if has_chat else "plain"
    if template == "chat" and not has_chat:
        raise ConfigError("template='chat' but the tokenizer has no chat template; pick a named template "
                          f"({', '.join(NAMED)})")
    return template


def render(messages: list[dict[str, str]], template: str, tokenizer: Any,
           add_generation_prompt: bool = False) -> Rendered:
    """``template`` must already be resolved (see ``resolve``)."""
    if template == "chat":
        return _render_chat(messages, tokenizer, add_generation_prompt)
    parts = _NAMED[template]
    text: list[str] = []
    pos = 0
    has_system = any(m["role"] == "system" for m in messages)
    if template == "alpaca" and not has_system:
        text.append(_ALPACA_PREAMBLE)
    elif template == "vicuna" and not has_system:
        text.append(_VICUNA_PREAMBLE + " ")
    pos = sum(len(t) for t in text)
    spans = []
    for m in messages:
        head, foot = parts.get(m["role"], parts["user"])
        text.append(head)
        pos += len(head)
        spans.append((pos, pos + len(m["content"])))
        text.append(m["content"])
        text.append(foot)
        pos += len(m["content"]) + len(foot)
    if add_generation_prompt:
        text.append(parts["assistant"][0].rstrip(" ") if template == "vicuna" else parts["assistant"][0])
    return Rendered("".join(text), spans, special=True)


def _render_chat(messages: list[dict[str, str]], tokenizer: Any, add_generation_prompt: bool) -> Rendered:
    msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
    try:
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt)
    except _template_errors() as e:  # jinja raise_exception(), e.g. roles that do not alternate
        raise TemplateError(f"chat template rejected the conversation: {e}") from None
    spans, pos = [], 0
    for m in msgs:
        c = m["content"]
        at = text.find(c, pos) if c else pos
        if at < 0:
            raise TemplateError("chat template changed a turn's content (cannot locate it in the rendering)")
        spans.append((at, at + len(c)))
        pos = at + len(c)
    return Rendered(text, spans, special=False)


def _template_errors() -> tuple[type[BaseException], ...]:
    from jinja2 import TemplateError as JinjaError

    return (JinjaError, ValueError, TypeError, KeyError, IndexError)


def assistant_header(template: str, tokenizer: Any) -> Rendered:
    """The short text that precedes an assistant turn with no instruction (IFD's s(y) condition)."""
    if template != "chat":
        head = _NAMED[template]["assistant"][0]
        return Rendered(head, [], special=True)
    mark = "\x00SIFTKIT\x00"
    for msgs in ([{"role": "assistant", "content": mark}],
                 [{"role": "user", "content": ""}, {"role": "assistant", "content": mark}]):
        try:
            text = tokenizer.apply_chat_template(msgs, tokenize=False)
        except _template_errors():
            text = ""               # this template needs a user turn first: try the next form
        if mark in text:
            return Rendered(text[: text.index(mark)], [], special=False)
    raise ConfigError("the chat template cannot render a lone assistant turn; use a named template")


def tokenize(rendered: Rendered, tokenizer: Any) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and (start, end) character offsets, shape (n,) and (n, 2)."""
    enc = tokenizer(rendered.text, add_special_tokens=rendered.special, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    offs = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    return ids, offs


def span_mask(offsets: np.ndarray, span: tuple[int, int]) -> np.ndarray:
    """Tokens whose characters overlap ``span`` (zero-width special tokens never do)."""
    a, b = span
    s, e = offsets[:, 0], offsets[:, 1]
    return (e > s) & (s < b) & (e > a) if b > a else np.zeros(len(offsets), dtype=bool)
