"""DiverseEvol: fixed-embedding rounds equal one k-center run from the random start; the re-embed hook."""

from __future__ import annotations

import numpy as np
import pytest

from diversity_helpers import blobs, context, unit
from siftkit.errors import ConfigError
from siftkit.registry import make, selector_class
from siftkit.selectors.diverseevol import diverse_evol
from siftkit.selectors.kcenter import k_center_greedy


def test_fixed_embedding_rounds_equal_one_k_center_run():
    rng = np.random.default_rng(0)
    x = unit(rng, 400, 8)
    init = rng.choice(400, 10, replace=False)
    got, rounds = diverse_evol(x, 70, init, round_size=25)
    assert rounds == 3 and len(got) == 70 == len(set(got.tolist()))
    assert got[:10].tolist() == init.tolist()
    rest = np.setdiff1d(np.arange(400), init)
    one = rest[k_center_greedy(x[rest], 60, initial=x[init])]
    assert got[10:].tolist() == one.tolist()


def test_reembed_hook_sees_each_rounds_selection_and_changes_picks():
    rng = np.random.default_rng(1)
    x, _ = blobs(rng, [50, 50, 50], d=8)
    calls: list[list[int]] = []
    flipped = unit(rng, 150, 8)

    def hook(sel: np.ndarray) -> np.ndarray:
        calls.append(sel.tolist())
        return flipped

    init = np.arange(3)
    fixed, _ = diverse_evol(x, 30, init, 9)
    moved, rounds = diverse_evol(x, 30, init, 9, reembed=hook)
    assert rounds == 3 and [len(c) for c in calls] == [12, 21]
    assert calls[0] == moved[:12].tolist() and calls[1] == moved[:21].tolist()
    assert moved[:12].tolist() == fixed[:12].tolist() and moved.tolist() != fixed.tolist()


def test_selector_seeded_and_exact_budget():
    rng = np.random.default_rng(2)
    x = unit(rng, 120, 6)
    sel = make(selector_class("diverseevol"), {"initial_size": 5, "round_size": 10}, "de")
    cands = np.arange(0, 120, 2, dtype=np.int64)
    a = sel.run(context(x, seed=3), cands, 27)
    b = sel.run(context(x, seed=3), cands, 27)
    c = sel.run(context(x, seed=4), cands, 27)
    assert a.kept.tolist() == b.kept.tolist() != c.kept.tolist()
    assert len(a.kept) == 27 and set(a.kept.tolist()) <= set(cands.tolist())
    assert a.details == {"initial": 5, "rounds": 3, "retrained": False}


def test_selector_hook_gets_pool_rows():
    rng = np.random.default_rng(3)
    x = unit(rng, 40, 4)
    seen: list[np.ndarray] = []

    def hook(rows: np.ndarray) -> np.ndarray:
        seen.append(rows)
        return x[10:]                         # embeddings of the candidates (rows 10..39)

    sel = make(selector_class("diverseevol"), {"initial_size": 2, "round_size": 3, "reembed": hook}, "de")
    res = sel.run(context(x), np.arange(10, 40, dtype=np.int64), 8)
    assert len(seen) == 1 and seen[0].min() >= 10          # one re-embedding: between the two rounds
    assert seen[0].tolist() == res.kept[:5].tolist()


def test_bad_config():
    with pytest.raises(ConfigError, match="round_size"):
        make(selector_class("diverseevol"), {"round_size": 0}, "de")
    with pytest.raises(ConfigError, match="callable"):
        make(selector_class("diverseevol"), {"reembed": "train.py"}, "de")
