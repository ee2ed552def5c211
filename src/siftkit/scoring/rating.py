"""Rating prompts read in one forward pass: fill a prompt, read the next-token logits of the rating digits.

Prompts are plain ``str.format`` templates over named fields (``{instruction}``, ``{response}``...).
``mode="raw"`` tokenizes the filled prompt as is, with the tokenizer's special tokens (BOS) — the format
DEITA's released scorers were trained on; ``mode="chat"`` wraps it as a user message in the model's chat
template with the generation prompt.

Truncation: when a filled prompt exceeds ``max_length`` tokens, the *fields* are cut from their end
(largest first, water-filling over their token counts) so the prompt's own text, and the question it ends
with, stay intact. A prompt whose fixed text alone does not fit gives NaN with reason ``too_long``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from .model import LoadedModel
from .nll import score

MODES = ("raw", "chat")


@dataclass
class Prompt:
    ids: np.ndarray | None      # None when it cannot fit
    truncated: bool


def check_format(fmt: str, fields: tuple[str, ...], where: str) -> None:
    try:
        fmt.format(**{f: "" for f in fields})
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"{where}: prompt template {fmt[:60]!r}... is invalid: it may only use the fields "
                          f"{', '.join('{' + f + '}' for f in fields)} (literal braces must be doubled): {e}")\
            from None
    if not any("{" + f + "}" in fmt for f in fields):
        raise ConfigError(f"{where}: prompt template {fmt[:60]!r} uses none of the fields {fields}")


def _encode(text: str, tok: Any, mode: str) -> np.ndarray:
    if mode == "chat":
        text = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                       add_generation_prompt=True)
        return np.asarray(tok(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
    return np.asarray(tok(text, add_special_tokens=True)["input_ids"], dtype=np.int64)


def build(fmt: str, fields: dict[str, str], tok: Any, mode: str, max_len: int) -> Prompt:
    ids = _encode(fmt.format(**fields), tok, mode)
    if len(ids) <= max_len:
        return Prompt(ids, False)
    enc = {k: tok(v, add_special_tokens=False, return_offsets_mapping=True) for k, v in fields.items()}
    counts = {k: len(e["input_ids"]) for k, e in enc.items()}
    fixed = len(_encode(fmt.format(**{k: "" for k in fields}), tok, mode))
    margin = 0
    for _ in range(4):                       # boundary merges can shift counts by a few tokens
        room = max_len - fixed - margin
        if room <= 0:
            break
        cap = _water_fill(list(counts.values()), room)
        cut = {}
        for k, e in enc.items():
            n = min(counts[k], cap)
            cut[k] = fields[k][: e["offset_mapping"][n - 1][1]] if n > 0 else ""
        ids = _encode(fmt.format(**cut), tok, mode)
        if len(ids) <= max_len:
            return Prompt(ids, True)
        margin += max(4, len(ids) - max_len)
    return Prompt(None, True)


def _water_fill(counts: list[int], room: int) -> int:
    """Largest cap c with sum(min(n, c)) <= room."""
    lo, hi = 0, max(counts) if counts else 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(n, mid) for n in counts) <= room:
            lo = mid
        else:
            hi = mid - 1
    return lo


def digit_logits(lm: LoadedModel, prompts: list[Prompt], digits: np.ndarray, token_budget: int,
                 max_batch: int) -> np.ndarray:
    """(n, len(digits)) logits of the digit tokens after each prompt; NaN rows for prompts that do not fit."""
    keep = [i for i, p in enumerate(prompts) if p.ids is not None and len(p.ids)]
    out = np.full((len(prompts), len(digits)), np.nan, dtype=np.float64)
    if not keep:
        return out
    seqs = [prompts[i].ids for i in keep]
    readout = np.asarray([len(s) - 1 for s in seqs], dtype=np.int64)
    stats = score(lm, seqs, None, 1, readout=readout, candidates=digits, token_budget=token_budget,
                  max_batch=max_batch)
    out[keep] = stats.readout
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - np.max(logits, axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
