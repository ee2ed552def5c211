"""``special_tokens``: literal special/control tokens of chat templates and tokenizers inside record text.

A record whose text contains ``<|endoftext|>`` or ``<|im_start|>`` as plain characters is turned into the real
special token by the target tokenizer at training time (an end-of-text in the middle of an answer, a fake turn
boundary). This signal counts such literals in every turn (system, user, assistant, tool):

- ``special_tokens`` (int64): occurrences in the whole conversation;
- ``special_token_kinds`` (string): the distinct tokens found, sorted, space-separated (``""`` when none).

Tokens searched: a built-in list of common ones (``BUILTIN``) plus, when the run names a ``tokenizer``, the
special added tokens of that tokenizer (``tokenizer.json`` / HF tokenizer; the offline default tokenizer is
not used, it is not a training target), plus any ``extra`` strings. One regular expression (Arrow's RE2,
longest token first) counts all of them per turn in one vectorised pass; only turns with a hit are looked at
in Python for the kinds.

Drop records with ``--filter "special_tokens == 0"``; or keep them and write them escaped with
``output.escape_special_tokens: true`` / ``--escape-special-tokens`` (``escape_special_tokens``: a zero-width
space U+200B after the token's first character, so ``<|endoftext|>`` becomes ``<\u200b|endoftext|>``, which no
tokenizer matches as the special token while the text reads the same).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ConfigError
from ..registry import register_signal
from .base import Signal

# Common literal control tokens of chat templates and tokenizers (GPT-2/ChatML/Qwen, Llama 2/3, Mistral,
# Phi, Gemma, SentencePiece/BERT-style, FIM). Order does not matter: the pattern puts longer ones first.
BUILTIN: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|im_sep|>", "<|endofprompt|>",
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
    "<|eom_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>",
    "<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "<|endofturn|>", "<|pad|>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
    "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
    "<s>", "</s>", "<unk>", "<pad>", "<mask>", "<eos>", "<bos>",
    "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]",
    "<start_of_turn>", "<end_of_turn>",
)
ZWSP = "\u200b"


@lru_cache(maxsize=8)
def tokenizer_special_tokens(spec: str) -> tuple[str, ...]:
    """The special added tokens of a tokenizer spec (see ``siftkit.signals.tokenizer``), sorted."""
    from .tokenizer import load_tokenizer

    tok = load_tokenizer(spec)
    decoder = tok.get_added_tokens_decoder() if hasattr(tok, "get_added_tokens_decoder") else {}
    found = {t.content for t in decoder.values() if getattr(t, "special", False) and t.content.strip()}
    return tuple(sorted(found))


def token_list(tokenizer: str | None = None, extra: Iterable[str] = (), builtin: bool = True) -> list[str]:
    """Every literal searched for, longest first (so the regex prefers ``</s>`` over ``<s>``-like prefixes)."""
    toks = set(BUILTIN if builtin else ())
    if tokenizer not in (None, "", "default"):
        toks.update(tokenizer_special_tokens(str(tokenizer)))
    toks.update(t for t in extra if t)
    return sorted(toks, key=lambda t: (-len(t), t))


_META = set("\\.^$|?*+()[]{}")


def pattern(tokens: Sequence[str]) -> str:
    """One alternation of the literals, valid for both Python ``re`` and Arrow's RE2 (only metacharacters
    are escaped: RE2 rejects some of the escapes ``re.escape`` writes)."""
    return "|".join("".join("\\" + c if c in _META else c for c in t) for t in tokens)


def escape_text(text: str, regex: re.Pattern[str]) -> str:
    """Insert U+200B after the first character of every literal special token in ``text``."""
    return regex.sub(lambda m: m.group(0)[0] + ZWSP + m.group(0)[1:], text)


def _escape_json(value: Any, regex: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return escape_text(value, regex)
    if isinstance(value, list):
        return [_escape_json(v, regex) for v in value]
    if isinstance(value, dict):
        return {escape_text(k, regex) if isinstance(k, str) else k: _escape_json(v, regex) for k, v in value.items()}
    return value


def escape_special_tokens(table: pa.Table, tokenizer: str | None = None, extra: Iterable[str] = ()) -> pa.Table:
    """The pool rows of ``table`` with every literal special token made inert (see the module doc).

    Rewrites the turn contents (``messages``) and the ``original`` JSON text (values only; a record without a
    token keeps its original text byte for byte). Records and their order are unchanged.
    """
    import orjson

    toks = token_list(tokenizer, extra)
    if not toks or table.num_rows == 0:
        return table
    pat = pattern(toks)
    regex = re.compile(pat)
    msgs = table.column("messages").combine_chunks()
    values = msgs.flatten()
    content = values.field("content")
    hit = pc.fill_null(pc.match_substring_regex(content, pat), False).to_numpy(zero_copy_only=False)
    if hit.any():
        texts = content.to_pylist()
        for i in np.flatnonzero(hit).tolist():
            texts[i] = escape_text(texts[i], regex)
        struct = pa.StructArray.from_arrays([values.field("role"), pa.array(texts, pa.string())],
                                            names=["role", "content"])
        new_msgs = pa.ListArray.from_arrays(msgs.offsets, struct).cast(msgs.type)
        table = table.set_column(table.schema.get_field_index("messages"), "messages", new_msgs)
    if "original" in table.column_names:
        orig = table.column("original").combine_chunks()
        # a record whose decoded text has a token may spell it with JSON escapes (\u003c...): check those too
        rec_hit = np.zeros(table.num_rows, dtype=bool)
        if hit.any():
            off = msgs.offsets.to_numpy()
            rec_of_turn = np.searchsorted(off, np.flatnonzero(hit), side="right") - 1
            rec_hit[rec_of_turn] = True
        rec_hit |= pc.fill_null(pc.match_substring_regex(orig, pat), False).to_numpy(zero_copy_only=False)
        if rec_hit.any():
            out = orig.to_pylist()
            for i in np.flatnonzero(rec_hit).tolist():
                s = escape_text(out[i], regex)
                try:
                    obj = orjson.loads(s)
                except orjson.JSONDecodeError:
                    out[i] = s
                    continue
                fixed = _escape_json(obj, regex)
                out[i] = s if fixed == obj else orjson.dumps(fixed).decode()
            table = table.set_column(table.schema.get_field_index("original"), "original",
                                     pa.array(out, pa.string()))
    return table


@register_signal("special_tokens")
class SpecialTokens(Signal):
    """Literal special tokens in the conversation: ``special_tokens`` (count), ``special_token_kinds``.

    Params: ``tokenizer`` (the run's tokenizer: its special added tokens are searched too), ``extra`` (more
    literal strings), ``builtin`` (search the built-in list, default true).
    """

    version = "1"
    batch_size = 16384

    def __init__(self, tokenizer: str | None = None, extra: Sequence[str] | str | None = None,
                 builtin: bool = True):
        if isinstance(extra, str):
            extra = [extra]
        if extra is not None and not all(isinstance(t, str) for t in extra):
            raise ConfigError("special_tokens: extra must be a list of strings")
        self.tokenizer, self.extra, self.builtin = tokenizer, sorted(set(extra or [])), bool(builtin)
        self._ident: dict[str, Any] = {}
        if tokenizer not in (None, "", "default"):
            from .tokenizer import tokenizer_identity

            self._ident = tokenizer_identity(tokenizer)
        self._tokens: list[str] | None = None

    def config(self) -> dict[str, Any]:
        return {**self._ident, "extra": self.extra, "builtin": self.builtin}

    def columns(self) -> dict[str, pa.DataType]:
        return {"special_tokens": pa.int64(), "special_token_kinds": pa.string()}

    def tokens(self) -> list[str]:
        if self._tokens is None:
            self._tokens = token_list(self.tokenizer, self.extra, self.builtin)
        return self._tokens

    def setup(self) -> None:
        self.tokens()

    def compute(self, batch: pa.Table) -> dict[str, Any]:
        msgs = batch.column("messages")
        if isinstance(msgs, pa.ChunkedArray):
            msgs = msgs.combine_chunks()
        n = len(msgs)
        toks = self.tokens()
        if not toks:
            return {"special_tokens": np.zeros(n, dtype=np.int64),
                    "special_token_kinds": np.full(n, "", dtype=object)}
        offsets = msgs.offsets.to_numpy().astype(np.int64)
        offsets -= offsets[0]
        content = msgs.flatten().field("content")
        pat = pattern(toks)
        per_turn = pc.fill_null(pc.count_substring_regex(content, pat), 0).to_numpy(zero_copy_only=False)
        csum = np.concatenate([[0], np.cumsum(per_turn, dtype=np.int64)])
        counts = csum[offsets[1:]] - csum[offsets[:-1]]
        kinds = np.full(n, "", dtype=object)
        hit_turns = np.flatnonzero(per_turn)
        if len(hit_turns):
            regex = re.compile(pat)
            rec_of = np.searchsorted(offsets, hit_turns, side="right") - 1
            found: dict[int, set[str]] = {}
            texts = content.take(pa.array(hit_turns, pa.int64())).to_pylist()
            for r, t in zip(rec_of.tolist(), texts):
                found.setdefault(r, set()).update(regex.findall(t))
            for r, s in found.items():
                kinds[r] = " ".join(sorted(s))
        return {"special_tokens": counts.astype(np.int64), "special_token_kinds": kinds}
