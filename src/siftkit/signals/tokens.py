"""Token counts of query, response and whole conversation with a chosen tokenizer.

Counts are of the turn *contents* (no chat template, no special tokens): ``tokens_query`` sums the turns
before the last assistant turn, ``tokens_response`` is the last assistant turn, ``tokens_total`` all
turns. A chat template adds a near-constant number of tokens per turn, which does not change rankings.

Speed: for tokenizers whose pre-tokenizer first splits on whitespace (WhitespaceSplit, Whitespace, BERT;
the default XLM-R Unigram tokenizer among them), the count of a text is the sum of the counts of its
whitespace-separated words, so each distinct word is tokenized once and cached (``mode="auto"``); the
split and the per-batch distinct words are computed in Arrow, so Python touches each distinct word once.
Each worker checks this on a sample of real texts against a full encode before using it, and falls back to
full encoding (``mode="exact"``) when any count differs. Other tokenizers (byte-level BPE) use batched
full encoding with identical turn contents encoded once per batch.
"""

from __future__ import annotations

import re
from functools import lru_cache
from itertools import repeat
from operator import attrgetter
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from .. import progress
from ..errors import ConfigError
from ..registry import register_signal
from .base import Signal
from .segments import flatten
from .tokenizer import load_tokenizer, tokenizer_file, tokenizer_identity

_SPLITTING_PRETOKENIZERS = {"WhitespaceSplit", "Whitespace", "BertPreTokenizer"}
# Python's str.split() also splits on U+001C..U+001F, which Rust's char::is_whitespace does not.
_PY_ONLY_WS = re.compile("[\x1c-\x1f]")
CACHE_LIMIT = 4_000_000
_IDS = attrgetter("ids")


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
    """Counts tokens of many texts, exactly, as fast as the tokenizer allows.

    ``count`` takes a list of strings or an Arrow string array. In word mode, splitting into words and
    finding the distinct words of a batch run in Arrow (C++): Python only sees each distinct word of a
    batch once. Arrow's whitespace split is used only after checking, once per process, that it splits
    on exactly the characters ``str.split()`` does (``arrow_splits_like_python``); else a per-text Python
    split gives the same counts more slowly.
    """

    def __init__(self, spec: str | None, mode: str = "auto", verify: int = 512):
        self.tok = load_tokenizer(spec)
        self.tok.no_truncation()
        self.tok.no_padding()
        self.mode = mode
        self.verify_left = verify if mode == "auto" else 0
        self.use_words = mode == "auto" and word_decomposable(self.tok)
        self.cache: dict[str, int] = {}

    def exact(self, texts: list[str] | pa.Array) -> np.ndarray:
        texts = _as_list(texts)
        if not texts:
            return np.zeros(0, dtype=np.int64)
        enc = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)
        keys = list(dict.fromkeys(texts))  # identical texts are encoded once
        counts = dict(zip(keys, map(len, map(_IDS, enc(keys, add_special_tokens=False)))))
        return np.fromiter(map(counts.__getitem__, texts), dtype=np.int64, count=len(texts))

    def count(self, texts: list[str] | pa.Array) -> np.ndarray:
        if not self.use_words:
            return self.exact(texts)
        if self.verify_left > 0:
            self._verify(_as_list(texts[: self.verify_left]))
            if not self.use_words:
                return self.exact(texts)
        if len(self.cache) > CACHE_LIMIT:
            self.cache.clear()
        arr = _as_arrow(texts) if arrow_splits_like_python() else None
        if arr is None:
            return self._count_python(_as_list(texts))
        words = pc.utf8_split_whitespace(arr)
        enc = pc.dictionary_encode(words.flatten())
        distinct = enc.dictionary.to_pylist()
        per_distinct = self._word_counts(distinct)
        per_word = per_distinct[enc.indices.to_numpy(zero_copy_only=False)]
        off = words.offsets.to_numpy()
        csum = np.concatenate([[0], np.cumsum(per_word)])
        out = csum[off[1:] - off[0]] - csum[off[:-1] - off[0]]
        odd = np.flatnonzero(pc.match_substring_regex(arr, _PY_ONLY_WS.pattern).to_numpy(zero_copy_only=False))
        if len(odd):
            out[odd] = self.exact(arr.take(pa.array(odd)))
        return out

    def _word_counts(self, words: list[str]) -> np.ndarray:
        """Token counts of distinct words, from the cache or encoded now (and cached)."""
        cache = self.cache
        out = np.fromiter(map(cache.get, words, repeat(-1)), dtype=np.int64, count=len(words))
        miss = np.flatnonzero(out < 0)
        if len(miss):
            new = [words[i] for i in miss.tolist()]
            enc = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)
            counts = list(map(len, map(_IDS, enc(new, add_special_tokens=False))))
            cache.update(zip(new, counts))
            out[miss] = counts
        return out

    def _count_python(self, texts: list[str]) -> np.ndarray:
        split = [t.split() for t in texts]
        distinct = list({w for ws in split for w in ws if w not in self.cache})
        if distinct:
            self._word_counts(distinct)
        get = self.cache.__getitem__
        out = np.fromiter((sum(map(get, ws)) for ws in split), dtype=np.int64, count=len(texts))
        odd = [i for i, t in enumerate(texts) if _PY_ONLY_WS.search(t)]
        if odd:
            out[odd] = self.exact([texts[i] for i in odd])
        return out

    def _verify(self, texts: list[str]) -> None:
        sample = [t for t in texts if t]
        self.verify_left -= len(texts)
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


def _as_list(texts: list[str] | pa.Array | pa.ChunkedArray) -> list[str]:
    if isinstance(texts, (pa.Array, pa.ChunkedArray)):
        return ["" if t is None else t for t in texts.to_pylist()]
    return list(texts)


def _as_arrow(texts: list[str] | pa.Array | pa.ChunkedArray) -> pa.Array | None:
    """An Arrow string array without nulls, or None when the texts cannot be one (e.g. lone surrogates)."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if not isinstance(texts, pa.Array):
        try:
            texts = pa.array(texts, pa.string())
        except (pa.ArrowException, UnicodeError, TypeError):
            return None
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        return None
    return pc.fill_null(texts, "") if texts.null_count else texts


@lru_cache(maxsize=1)
def arrow_splits_like_python() -> bool:
    """True when Arrow's ``utf8_split_whitespace`` splits on exactly the characters ``str.split()`` does
    (ignoring the empty words Arrow yields at leading/trailing whitespace: they count 0 tokens).

    Checked once per process on every code point, in strings of 32 code points each followed by "a".
    """
    cps = np.arange(0x110000, dtype=np.uint32)
    cps = cps[(cps < 0xD800) | (cps >= 0xE000)]
    inter = np.empty(2 * len(cps), dtype=np.uint32)
    inter[0::2], inter[1::2] = cps, ord("a")
    text = inter.tobytes().decode("utf-32-le")
    nbytes = np.ones(len(inter), dtype=np.int32)
    nbytes[0::2] = 1 + (cps >= 0x80) + (cps >= 0x800) + (cps >= 0x10000)
    ends = np.cumsum(nbytes)[63::64]
    offsets = np.concatenate([[0], ends, [] if len(inter) % 64 == 0 else [int(nbytes.sum())]]).astype(np.int32)
    arr = pa.StringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets.tobytes()),
                                      pa.py_buffer(text.encode("utf-8")))
    got = [w for ws in pc.utf8_split_whitespace(arr).to_pylist() for w in ws if w]
    return got == [w for i in range(0, len(text), 64) for w in text[i:i + 64].split()]


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

    def requirements(self) -> dict[str, str]:
        """A .gguf file or a model folder without tokenizer.json is loaded through transformers."""
        import os

        spec = os.path.expanduser(str(self.tokenizer or ""))
        if spec.lower().endswith(".gguf"):
            return {"transformers": "tokenizers from .gguf files", "gguf": "tokenizers from .gguf files"}
        if os.path.isdir(spec) and tokenizer_file(spec) is None:
            return {"transformers": f"the tokenizer of {self.tokenizer!r}"}
        return {}

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
        per_turn = self._counter.count(fb.content_array)
        return {"tokens_query": fb.per_record_sum(per_turn, "query"),
                "tokens_response": fb.per_record_sum(per_turn, "response"),
                "tokens_total": fb.per_record_sum(per_turn, "conversation")}
