"""Token counts of query, response and whole conversation with a chosen tokenizer.

Counts are of the turn *contents* (no chat template, no special tokens): ``tokens_query`` sums the turns
before the last assistant turn, ``tokens_response`` is the last assistant turn, ``tokens_total`` all
turns. A chat template adds a near-constant number of tokens per turn, which does not change rankings.

Speed: for tokenizers whose pre-tokenizer first splits on whitespace (WhitespaceSplit, Whitespace, BERT;
the default XLM-R Unigram tokenizer among them), the count of a text is the sum of the counts of its
whitespace-separated words, so each distinct word is tokenized once and cached (``mode="auto"``).
Each worker checks this on a sample of real texts against a full encode before using it, and falls back to
full encoding (``mode="exact"``) when any count differs. Other tokenizers (byte-level BPE) use batched
full encoding with identical turn contents encoded once per batch.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from .. import progress
from ..errors import ConfigError
from ..registry import register_signal
from .base import Signal
from .segments import flatten
from .tokenizer import load_tokenizer, tokenizer_identity

_SPLITTING_PRETOKENIZERS = {"WhitespaceSplit", "Whitespace", "BertPreTokenizer"}
# Python's str.split() also splits on U+001C..U+001F, which Rust's char::is_whitespace does not.
_PY_ONLY_WS = re.compile("[\x1c-\x1f]")
CACHE_LIMIT = 4_000_000


def word_decomposable(tok: Any) -> bool:
    """True when the tokenizer's pre-tokenization starts by splitting on whitespace."""
    cfg = orjson.loads(tok.to_str())
    pre = cfg.get("pre_tokenizer") or {}
    first = pre.get("pretokenizers", [{}])[0] if pre.get("type") == "Sequence" else pre
    if first.get("type") not in _SPLITTING_PRETOKENIZERS:
        return False
    # Added tokens that contain whitespace could match across words.
    return not any(re.search(r"\s", t.get("content", "")) for t in cfg.get("added_tokens") or [])


class TokenCounter:
    """Counts tokens of many texts, exactly, as fast as the tokenizer allows."""

    def __init__(self, spec: str | None, mode: str = "auto", verify: int = 512):
        self.tok = load_tokenizer(spec)
        self.tok.no_truncation()
        self.tok.no_padding()
        self.mode = mode
        self.verify_left = verify if mode == "auto" else 0
        self.use_words = mode == "auto" and word_decomposable(self.tok)
        self.cache: dict[str, int] = {}

    def exact(self, texts: list[str]) -> np.ndarray:
        enc = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)
        out = np.zeros(len(texts), dtype=np.int64)
        uniq: dict[str, int] = {}
        for t in texts:
            uniq.setdefault(t, len(uniq))
        keys = list(uniq)
        counts = [len(e.ids) for e in enc(keys, add_special_tokens=False)] if keys else []
        for i, t in enumerate(texts):
            out[i] = counts[uniq[t]]
        return out

    def count(self, texts: list[str]) -> np.ndarray:
        if not self.use_words:
            return self.exact(texts)
        if self.verify_left > 0:
            self._verify(texts)
            if not self.use_words:
                return self.exact(texts)
        cache = self.cache
        if len(cache) > CACHE_LIMIT:
            cache.clear()
        split = [t.split() for t in texts]
        new = {w for ws in split for w in ws if w not in cache}
        if new:
            words = list(new)
            enc = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)
            for w, e in zip(words, enc(words, add_special_tokens=False)):
                cache[w] = len(e.ids)
        get = cache.__getitem__
        out = np.fromiter((sum(map(get, ws)) for ws in split), dtype=np.int64, count=len(texts))
        odd = [i for i, t in enumerate(texts) if _PY_ONLY_WS.search(t)]
        if odd:
            out[odd] = self.exact([texts[i] for i in odd])
        return out

    def _verify(self, texts: list[str]) -> None:
        sample = [t for t in texts[: self.verify_left] if t]
        self.verify_left -= len(sample)
        if not sample:
            return
        saved, self.verify_left = self.verify_left, 0
        fast = self.count(sample)
        self.verify_left = saved
        ref = self.exact(sample)
        if not np.array_equal(fast, ref):
            bad = int(np.flatnonzero(fast != ref)[0])
            progress.warn(f"word-cached token counts differ from full encoding (e.g. {fast[bad]} vs {ref[bad]}); "
                          f"using full encoding")
            self.use_words = False
            self.verify_left = 0


@register_signal("tokens")
class TokenCounts(Signal):
    """Token counts: ``tokens_query``, ``tokens_response``, ``tokens_total`` (see module docs).

    Params: ``tokenizer`` (spec, see ``siftkit.signals.tokenizer``; default: offline XLM-R Unigram),
    ``mode`` (``auto`` or ``exact``; both give identical numbers, auto is faster where it applies).
    """

    version = "1"
    batch_size = 16384

    def __init__(self, tokenizer: str | None = None, mode: str = "auto"):
        if mode not in ("auto", "exact"):
            raise ConfigError(f"tokens: mode must be 'auto' or 'exact', not {mode!r}")
        self.tokenizer = tokenizer
        self.mode = mode
        self._ident = tokenizer_identity(tokenizer)
        self._counter: TokenCounter | None = None

    def config(self) -> dict[str, Any]:
        # mode is not part of the fingerprint: both modes give the same counts.
        return dict(self._ident)

    def columns(self) -> dict[str, pa.DataType]:
        return {"tokens_query": pa.int64(), "tokens_response": pa.int64(), "tokens_total": pa.int64()}

    def setup(self) -> None:
        self._counter = TokenCounter(self.tokenizer, self.mode)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_counter"] = None  # tokenizers are rebuilt in each worker
        return state

    def compute(self, batch: pa.Table) -> dict[str, np.ndarray]:
        if self._counter is None:
            self.setup()
        fb = flatten(batch)
        per_turn = self._counter.count(fb.contents)
        return {"tokens_query": fb.per_record_sum(per_turn, "query"),
                "tokens_response": fb.per_record_sum(per_turn, "response"),
                "tokens_total": fb.per_record_sum(per_turn, "conversation")}
