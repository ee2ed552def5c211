"""ZIP (Entropy Law): fast vs recompress (same picks), the faithful (published) rule with its discard and
text rendering against a transcription, the DEFLATE 32 KB window, and the selector's behaviour."""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa
import pytest

from diversity_helpers import qa_pool
from siftkit.errors import ConfigError
from siftkit.registry import make, selector_class
from siftkit.selectors.base import SelectionContext
from siftkit.selectors.zip import DEFLATE_WINDOW, _Faithful, _Fast, zip_select


def rand_text(rng: np.random.Generator, n_words: int, vocab: int = 5000) -> bytes:
    words = [f"w{int(v)}" for v in rng.integers(0, vocab, n_words)]
    return " ".join(words).encode()


def test_fast_scores_equal_recompression_byte_for_byte():
    rng = np.random.default_rng(0)
    fast, faithful = _Fast(9, b"\n"), _Faithful(9, b"\n")
    for _ in range(12):
        x = rand_text(rng, int(rng.integers(20, 900)))
        assert fast.ratio_with(x) == faithful.ratio_with(x)
        fast.add(x)
        faithful.add(x)
    probe = rand_text(rng, 300)
    data = bytes(faithful.buf) + b"\n" + probe
    assert fast.ratio_with(probe) == len(data) / len(zlib.compress(data, 9))


@pytest.mark.parametrize("cls", [_Faithful, _Fast])
def test_deflate_window_blind_to_duplicates_older_than_32kb(cls):
    rng = np.random.default_rng(1)
    dup = rand_text(rng, 400)                                   # ~2.7 KB
    alone = len(zlib.compress(dup, 9))

    def marginal(prefix: list[bytes], x: bytes = dup) -> int:
        s = cls(9, b"\n")
        for p in prefix:
            s.add(p)
        before = len(zlib.compress(b"\n".join(prefix), 9))
        after = len(zlib.compress(b"\n".join(prefix + [x]), 9))
        # the selector's score of dup against the set is the same number as recompression
        assert s.ratio_with(x) == len(b"\n".join(prefix + [x])) / after
        return after - before

    filler = [rand_text(rng, 800) for _ in range(12)]           # ~4.6 KB each, ~55 KB in all
    assert sum(map(len, filler)) > 1.5 * DEFLATE_WINDOW
    recent = marginal(filler + [dup])                           # duplicate is the last sample: in the window
    old = marginal([dup] + filler)                              # duplicate > 32 KB back: out of the window
    unseen = marginal([rand_text(rng, 400)] + filler, rand_text(rng, 400))   # a new text of the same kind
    assert recent < 0.1 * unseen < 0.1 * alone                  # recognised: costs almost nothing
    assert abs(old - unseen) < 0.05 * unseen                    # not recognised: costs what a new text costs


def test_recompress_and_fast_select_the_same_rows():
    rng = np.random.default_rng(2)
    base = [rand_text(rng, int(rng.integers(30, 300)), vocab=300) for _ in range(25)]
    texts = base + [b + b" extra" for b in base[:15]] + [rand_text(rng, 100, vocab=20000) for _ in range(20)]
    a, da = zip_select(texts, 23, k1=30, k2=12, k3=5, mode="recompress")
    b, db = zip_select(texts, 23, k1=30, k2=12, k3=5, mode="fast")
    assert len(a) == 23 and len(set(a.tolist())) == 23
    assert a.tolist() == b.tolist()
    assert da == db and da["rounds"] == 5                       # 5 + 5 + 5 + 5 + 3


def test_zip_avoids_redundant_copies():
    rng = np.random.default_rng(3)
    one = rand_text(rng, 200)
    distinct = [rand_text(rng, 200) for _ in range(10)]
    copies = [one] * 30
    texts = copies + distinct
    picks, _ = zip_select(texts, 10, k1=40, k2=40, k3=10, mode="fast")
    assert sum(p < 30 for p in picks.tolist()) <= 1             # at most one copy: the rest add nothing new


def _ctx(pool: pa.Table) -> SelectionContext:
    return SelectionContext(pool=pool, signals=pa.table({"_": pa.nulls(len(pool))}).drop(["_"]), seed=0)


def test_selector_runs_on_a_pool_and_keeps_candidates_only():
    rng = np.random.default_rng(4)
    queries = [rand_text(rng, 40, vocab=200).decode() for _ in range(40)]
    pool = qa_pool(queries)
    sel = make(selector_class("zip"), {"k1": 20, "k2": 8, "k3": 3}, "zip")
    cands = np.arange(0, 40, 2, dtype=np.int64)
    res = sel.run(_ctx(pool), cands, 7)
    assert len(res.kept) == 7 and set(res.kept.tolist()) <= set(cands.tolist())
    assert res.dropped == {"over_budget": 13}
    res2 = make(selector_class("zip"), {"k1": 20, "k2": 8, "k3": 3, "mode": "recompress"}, "zip").run(
        _ctx(pool), cands, 7)
    assert res2.kept.tolist() == res.kept.tolist()


def ref_zip_published(texts, budget, k1, k2, k3, sep=b"\n", prefix=b"", suffix=b""):
    """The published rule, transcribed from its description: stage 1 the k1 lowest stored scores among the
    unused, stage 2 re-score them against the selected set and keep the k2 lowest, *all marked used*,
    stage 3 a greedy group of k3 of them (the rest are lost); whole recompression, float64, ties in list
    order (lower row first)."""
    def ratio(items):
        data = prefix + sep.join(items) + suffix
        return len(data) / len(zlib.compress(data, 9))

    score = [len(t) / len(zlib.compress(t, 9)) for t in texts]
    used, selected = set(), []
    while len(selected) < budget and len(used) < len(texts):
        stage1 = sorted((i for i in range(len(texts)) if i not in used), key=lambda i: (score[i], i))[:k1]
        for i in stage1:
            score[i] = ratio([texts[j] for j in selected] + [texts[i]])
        stage2 = sorted(stage1, key=lambda i: score[i])[:k2]
        used |= set(stage2)
        group: list[int] = []
        for _ in range(min(k3, budget - len(selected))):
            best = min(stage2, key=lambda i: ratio([texts[j] for j in group] + [texts[i]]))
            stage2.remove(best)
            group.append(best)
            selected.append(best)
    return selected


@pytest.mark.parametrize("render", ["text", "str"])
def test_faithful_matches_the_transcribed_published_rule(render):
    rng = np.random.default_rng(5)
    base = [rand_text(rng, int(rng.integers(30, 300)), vocab=300) for _ in range(25)]
    texts = base + [b + b" extra" for b in base[:15]] + [rand_text(rng, 100, vocab=20000) for _ in range(20)]
    kw = {"sep": b", ", "prefix": b"[", "suffix": b"]"} if render == "str" else {"sep": b"\n"}
    got, d = zip_select(texts, 23, k1=30, k2=12, k3=5, mode="faithful", **kw)
    assert got.tolist() == ref_zip_published(texts, 23, 30, 12, 5, **kw)
    assert d["rounds"] == 5 and d["discarded"] == 4 * (12 - 5) + (12 - 3)
    clean, _ = zip_select(texts, 23, k1=30, k2=12, k3=5, mode="fast", **kw)
    assert clean.tolist() != got.tolist()          # the discard changes the selection
    # the discard exhausts the pool: 60 texts, 12 used per round -> 5 rounds of 5 = 25 < 30
    short, d2 = zip_select(texts, 30, k1=30, k2=12, k3=5, mode="faithful", **kw)
    assert len(short) == 25 and d2["discarded"] == 35
    assert short.tolist() == ref_zip_published(texts, 30, 30, 12, 5, **kw)


def test_faithful_selector_renders_the_sharegpt_str():
    rng = np.random.default_rng(6)
    queries = [rand_text(rng, 30, vocab=100).decode() for _ in range(30)]
    pool = qa_pool(queries)
    params = {"k1": 20, "k2": 8, "k3": 3, "mode": "faithful", "render": "str"}
    res = make(selector_class("zip"), params, "zip").run(_ctx(pool), np.arange(30, dtype=np.int64), 9)
    texts = [str([{"from": "human", "value": q}, {"from": "gpt", "value": f"answer {i}"}]).encode()
             for i, q in enumerate(queries)]
    assert res.kept.tolist() == ref_zip_published(texts, 9, 20, 8, 3, b", ", b"[", b"]")
    assert res.dropped["zip_discarded"] == 3 * 5 and sum(res.dropped.values()) == 30 - 9
    with pytest.raises(ConfigError, match="render"):
        make(selector_class("zip"), {"render": "str", "segment": "query"}, "zip")


@pytest.mark.parametrize("params", [{"mode": "exact"}, {"render": "repr"}, {"k1": 5, "k2": 10}, {"k3": 0}, {"level": 0},
                                    {"segment": "turns"}])
def test_bad_config(params):
    with pytest.raises(ConfigError, match="zip"):
        make(selector_class("zip"), params, "zip")


def test_needs_budget():
    with pytest.raises(ConfigError, match="budget"):
        make(selector_class("zip"), {}, "zip").run(_ctx(qa_pool(["a"])), np.arange(1), None)


def test_stage_one_partition_equals_stable_sort_with_ties():
    from siftkit.selectors.zip import _lowest

    rng = np.random.default_rng(5)
    values = rng.integers(0, 6, 300).astype(np.float64)       # many ties
    rows = np.sort(rng.choice(1000, 300, replace=False))
    for k in (1, 7, 50, 299, 300, 400):
        assert _lowest(rows, values, k).tolist() == rows[np.argsort(values, kind="stable")[:k]].tolist()
