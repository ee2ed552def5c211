import numpy as np
import pyarrow as pa
import pytest

from conftest import convo, write_jsonl
from siftkit.errors import ConfigError
from siftkit.io import read_pool
from siftkit.signals.compute import build_signal, compute_signals
from siftkit.signals.segments import flatten
from siftkit.signals.store import SignalStore
from siftkit.signals.text import Compression, ExactHash, TextStats
from siftkit.signals.tokenizer import load_tokenizer
from siftkit.signals.tokens import TokenCounter, TokenCounts


@pytest.fixture
def multi(tmp_path):
    return read_pool(str(write_jsonl(tmp_path / "m.jsonl", [
        {"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hello"},
                      {"role": "assistant", "content": "hi there"}, {"role": "user", "content": "how are you"},
                      {"role": "assistant", "content": "fine"}]},
        convo("abc", "defgh"),
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "answer"},
                      {"role": "user", "content": "thanks!"}]},
    ])))


def test_segments(multi):
    fb = flatten(multi.table)
    assert fb.texts("response") == ["fine", "defgh", "answer"]
    assert fb.texts("query", sep="|") == ["sys|hello|hi there|how are you", "abc", "q"]
    assert fb.texts("conversation", sep="|")[2] == "q|answer|thanks!"


def test_text_stats_multi_turn(multi):
    r = TextStats().compute(multi.table)
    assert r["chars_response"].tolist() == [4, 5, 6]
    assert r["chars_query"].tolist() == [3 + 5 + 8 + 11, 3, 1]
    assert r["chars_total"].tolist() == [3 + 5 + 8 + 11 + 4, 8, 1 + 6 + 7]
    assert r["turns"].tolist() == [5, 2, 3]
    assert r["assistant_turns"].tolist() == [2, 1, 1]


def test_exact_hash_normalises_whitespace_and_case(tmp_path):
    p = read_pool(str(write_jsonl(tmp_path / "h.jsonl", [
        convo("What  is\n2+2?", "Four."), convo("what is 2+2?", "four."), convo("what is 2+2?", "five."),
        {"messages": [{"role": "system", "content": "what is 2+2?"}, {"role": "assistant", "content": "four."},
                      {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}])))
    h = ExactHash().compute(p.table)["exact_hash"]
    assert h[0] == h[1] and h[1] != h[2] and h[3] not in h[:3]
    hc = ExactHash(lowercase=False).compute(p.table)["exact_hash"]
    assert hc[0] != hc[1]
    hr = ExactHash(segment="query").compute(p.table)["exact_hash"]
    assert hr[1] == hr[2]
    with pytest.raises(ConfigError):
        ExactHash(segment="nope")


def test_compression_ratio(tmp_path):
    p = read_pool(str(write_jsonl(tmp_path / "c.jsonl", [convo("q", "ab " * 500), convo("q", "The quick brown fox.")])))
    r = Compression().compute(p.table)
    assert r["zlib_ratio"][0] < 0.1 < r["zlib_ratio"][1]
    import zlib
    assert r["zlib_bytes"][1] == len(zlib.compress(b"q\n\nThe quick brown fox.", 9))


def test_token_counts_match_plain_encoding(multi):
    tok = load_tokenizer(None)
    r = TokenCounts().compute(multi.table)
    def n(t):
        return len(tok.encode(t, add_special_tokens=False).ids)
    assert r["tokens_response"].tolist() == [n("fine"), n("defgh"), n("answer")]
    assert r["tokens_query"][0] == n("sys") + n("hello") + n("hi there") + n("how are you")
    assert r["tokens_total"][2] == n("q") + n("answer") + n("thanks!")


def test_word_cache_equals_exact_on_tricky_texts():
    texts = ["Hello,   world!\n\nNew\tline", "你好世界 hello", "e\u0301cole ´accent", "a\u00a0b\u3000c",
             "x\x1fy z", "", "   ", "URL: https://example.com/a?b=c&d=e", "emoji 🙂🙂 ok", "ﬁne ligature"] * 3
    fast = TokenCounter(None)
    assert fast.use_words
    exact = TokenCounter(None, mode="exact")
    assert fast.count(texts).tolist() == exact.count(texts).tolist()


def test_token_signal_fingerprint_tracks_tokenizer(tmp_path):
    import shutil

    from siftkit.signals.tokenizer import default_tokenizer_path
    a = TokenCounts()
    b = TokenCounts(mode="exact")
    assert a.fingerprint() == b.fingerprint()  # same numbers, same cache
    local = tmp_path / "tok.json"
    shutil.copy(default_tokenizer_path(), local)
    assert TokenCounts(tokenizer=str(local)).fingerprint() != a.fingerprint()


def test_unknown_tokenizer_path_is_clear(tmp_path):
    (tmp_path / "x.txt").write_text("no")
    with pytest.raises(ConfigError, match="tokenizer"):
        load_tokenizer(str(tmp_path / "x.txt"))


def test_cache_reuse_and_resume(small_pool, tmp_path):
    pool = read_pool(str(small_pool))
    stats: dict = {}
    t1 = compute_signals(pool.table, ["text_stats", "exact_hash"], str(tmp_path / "c"), shard_size=2, stats=stats)
    assert stats["text_stats"]["computed"] == len(pool)
    store = SignalStore(str(tmp_path / "c"))
    sig = build_signal("text_stats")
    parts = store.parts(sig)
    assert len(parts) == 4  # 7 records in shards of 2
    stats2: dict = {}
    t2 = compute_signals(pool.table, ["text_stats", "exact_hash"], str(tmp_path / "c"), shard_size=2, stats=stats2)
    assert stats2["text_stats"]["computed"] == 0 and t2.equals(t1)
    import os
    os.remove(parts[1])  # as if the run had been killed before this shard was written
    stats3: dict = {}
    t3 = compute_signals(pool.table, ["text_stats"], str(tmp_path / "c"), shard_size=2, stats=stats3)
    assert stats3["text_stats"]["computed"] == 2
    assert t3.column("chars_total").equals(t1.column("chars_total"))


def test_cache_aligns_by_id_when_pool_order_changes(small_pool, tmp_path):
    pool = read_pool(str(small_pool))
    t1 = compute_signals(pool.table, ["text_stats"], str(tmp_path / "c"))
    rev = pool.table.take(pa.array(list(range(len(pool)))[::-1]))
    t2 = compute_signals(rev, ["text_stats"], str(tmp_path / "c"))
    assert t2.column("chars_total").to_pylist() == t1.column("chars_total").to_pylist()[::-1]


def test_parallel_workers_give_identical_results(small_pool, tmp_path):
    pool = read_pool(str(small_pool))
    a = compute_signals(pool.table, ["text_stats", "tokens"], str(tmp_path / "a"), shard_size=2, workers=1)
    b = compute_signals(pool.table, ["text_stats", "tokens"], str(tmp_path / "b"), shard_size=2, workers=2)
    assert a.equals(b)


def test_build_signal_errors():
    with pytest.raises(ConfigError, match="unknown signal"):
        build_signal("nope")
    with pytest.raises(ConfigError, match="text_stats.*takes no arguments"):
        build_signal({"name": "text_stats", "bogus": 1})
    with pytest.raises(ConfigError, match="unexpected keyword"):
        build_signal({"name": "exact_hash", "bogus": 1})


def test_reason_counts_feed_the_manifest(small_pool, tmp_path):
    from siftkit.config import build_config
    from siftkit.pipeline import run_selection
    from siftkit.signals.base import Signal, reason_counts

    class Flaky(Signal):
        name = "flaky"

        def columns(self):
            return {"flaky": pa.float64(), "flaky_reason": pa.string()}

        def compute(self, batch):
            n = batch.num_rows
            reason = np.array(["too_long" if i % 3 == 0 else "" for i in range(n)], dtype=object)
            return {"flaky": np.where(reason == "", 1.0, np.nan), "flaky_reason": reason}

    pool = read_pool(str(small_pool))
    cfg = build_config({"inputs": ["<pool>"], "signals": [Flaky()], "budget": 2, "cache_dir": str(tmp_path),
                        "steps": [{"select": "top", "by": "flaky"}]})
    sel = run_selection(cfg, pool=pool)
    assert sel.counts()["signal_failures"] == {"flaky_reason": {"too_long": 3}}
    assert reason_counts(sel.signals) == {"flaky_reason": {"too_long": 3}}
    assert not np.isin(sel.selected, [0, 3, 6]).any()  # failed records are never chosen


def test_arrow_word_split_matches_python_and_counts_agree():
    from siftkit.signals.tokens import arrow_splits_like_python

    assert arrow_splits_like_python()
    texts = ["Hello,   world!\n\nNew\tline", "你好世界 hello", "a\u00a0b\u3000c\u2028d", "x\x1fy z", "", " ",
             "\u0085lead", "tab\tand\x0bvt\x0cff"] * 5
    c = TokenCounter(None)
    assert c.count(texts).tolist() == c.count(pa.array(texts)).tolist() == TokenCounter(None, mode="exact").count(
        texts).tolist()
