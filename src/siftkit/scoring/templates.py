"""Render conversations to text with exact character spans of every turn's content.

``template`` is ``"auto"`` (the tokenizer's chat template, or ``plain`` when it has none), ``"chat"``
(the chat template, an error when there is none) or a named template: ``plain``, ``alpaca``, ``vicuna``,
``chatml`` (generic formats) and ``cherry``, ``superfiltering``, ``study`` (the prompts of the published
IFD / cross-entropy code, written from its description; see docs/published.md). Named templates are built
piece by piece, so spans are exact; with a chat template each turn's content is located in the rendered text
in order (an error if the template rewrites a content). Spans are mapped to token positions through the fast
tokenizer's character offsets (``content_mask``: a token that straddles template text and content belongs to
the content only when its template characters are whitespace).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

NAMED = ("plain", "alpaca", "vicuna", "chatml", "cherry", "superfiltering", "study")
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
    # Cherry LLM's data_analysis.py --prompt alpaca (its published runs): the Alpaca preamble, "### Instruction:\n"
    # + instruction + a blank line, then "### Response:" with the response right after the colon; condition B is
    # "### Response:" + response. Multi-turn (not in the reference): pairs separated by a blank line.
    "cherry": {"system": ("", "\n\n"), "user": ("### Instruction:\n", "\n\n"),
               "assistant": ("### Response:", "\n\n"), "tool": ("### Input:\n", "\n\n")},
    # Superfiltering's code_ifd/data_analysis.py --prompt none: instruction + newline, then the response;
    # condition B is the response alone. Multi-turn (not in the reference): every turn ends with a newline.
    "superfiltering": {r: ("", "\n") for r in ("system", "user", "assistant", "tool")},
    # The study's code (Xia et al., 2024; cross_entropy/entropy_response.py, IFD/cherry_seletion): the turns before
    # the last as "\nHuman: {query}\nAssistant: " for a user turn and the bare text for any other turn, that
    # string stripped, then the last response; condition B (its IFD) is "Assistant: " + response.
    "study": {"system": ("", ""), "user": ("\nHuman: ", "\nAssistant: "), "assistant": ("", ""),
              "tool": ("", "")},
}
# templates of the published code: nothing after the last response (the reference scores prompt + response)
_NO_FINAL_FOOTER = ("cherry", "superfiltering", "study")
# condition B's text before the response, where it is not the template's assistant header
_B_HEADER = {"superfiltering": "", "study": "Assistant: "}


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
    has_system = any(m["role"] == "system" for m in messages)
    pieces: list[tuple[str, bool]] = []          # (text, is a turn's content)
    if template in ("alpaca", "cherry") and not has_system:
        pieces.append((_ALPACA_PREAMBLE, False))
    elif template == "vicuna" and not has_system:
        pieces.append((_VICUNA_PREAMBLE + " ", False))
    final_reply = bool(messages) and messages[-1]["role"] == "assistant"
    for k, m in enumerate(messages):
        head, foot = parts.get(m["role"], parts["user"])
        if k == len(messages) - 1 and final_reply and template in _NO_FINAL_FOOTER:
            foot = ""
        pieces += [(head, False), (m["content"], True), (foot, False)]
    if add_generation_prompt:
        head = parts["assistant"][0]
        pieces.append((head.rstrip(" ") if template == "vicuna" else head, False))
    if template == "study":
        _strip_glue(pieces, final_reply)
    text: list[str] = []
    spans, pos = [], 0
    for t, is_content in pieces:
        if is_content:
            spans.append((pos, pos + len(t)))
        text.append(t)
        pos += len(t)
    return Rendered("".join(text), spans, special=True)


def _strip_glue(pieces: list[tuple[str, bool]], final_reply: bool) -> None:
    """The study's ``x.strip()``: leading template whitespace, and the template whitespace that ends the text
    before the last response (or the whole text when it ends with a user turn). Contents are never changed."""
    for k, (t, is_content) in enumerate(pieces):
        if is_content and t:
            break
        pieces[k] = (t if is_content else t.lstrip(), is_content)
        if not is_content and pieces[k][0]:
            break
    last_content = max((k for k, (_, c) in enumerate(pieces) if c), default=-1)
    end = last_content if final_reply else len(pieces)
    for k in range(end - 1, -1, -1):
        t, is_content = pieces[k]
        if is_content and t:
            break
        pieces[k] = (t if is_content else t.rstrip(), is_content)
        if not is_content and pieces[k][0]:
            break


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
    """The short text that precedes an assistant turn with no instruction (IFD's s(y) condition): the
    template's assistant header, or what the reference code puts there (``superfiltering``: nothing;
    ``study``: ``"Assistant: "``)."""
    if template != "chat":
        head = _B_HEADER.get(template, _NAMED[template]["assistant"][0])
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


def content_mask(offsets: np.ndarray, span: tuple[int, int], text: str) -> np.ndarray:
    """Tokens of a content span, for scoring: those whose characters overlap ``span``, except a token that
    straddles the span's edge and also holds template characters other than whitespace (":-" where a header
    "...:" meets a response "-1": it is template context, not content). A straddling token whose template
    characters are only whitespace (" The" after "Assistant: ") is content."""
    m = span_mask(offsets, span)
    a, b = span
    s, e = offsets[:, 0], offsets[:, 1]
    for i in np.flatnonzero(m & ((s < a) | (e > b))):
        outside = text[int(s[i]):a] + text[b:int(e[i])]
        if outside.strip():
            m[i] = False
    return m
