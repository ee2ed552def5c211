"""RDS+: chunked top-k against dense similarities, round-robin against a literal reference, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from diversity_helpers import unit
from siftkit.errors import ConfigError
from siftkit.registry import make, selector_class, signal_class
from siftkit.selectors.base import SelectionContext
from siftkit.selectors.rds import rds_select, topk_per_target


def ref_rds(x: np.ndarray, t: np.ndarray, tasks: list[str], budget: int) -> list[int]:
    """Dense N x Q similarities; tasks take turns, examples take turns inside a task, best unselected."""
    sims = x.astype(np.float64) @ t.astype(np.float64).T
    ranked = [sorted(range(len(x)), key=lambda i: (-sims[i, q], i)) for q in range(len(t))]
    order = list(dict.fromkeys(tasks))
    members = {tk: [q for q in range(len(t)) if tasks[q] == tk] for tk in order}
    turn = dict.fromkeys(order, 0)
    picks: list[int] = []
    while len(picks) < min(budget, len(x)):
        for tk in order:
            if len(picks) == min(budget, len(x)):
                break
            q = members[tk][turn[tk] % len(members[tk])]
            turn[tk] += 1
            picks.append(next(i for i in ranked[q] if i not in picks))
    return picks


def test_chunked_topk_equals_dense():
    rng = np.random.default_rng(0)
    x, t = unit(rng, 500, 8), unit(rng, 7, 8)
    idx, val = topk_per_target(x, t, 20, chunk=64)
    dense = t @ x.T
    for q in range(7):
        want = np.argsort(-dense[q], kind="stable")[:20]
        assert idx[q].tolist() == want.tolist()
        np.testing.assert_allclose(val[q], dense[q, want], rtol=1e-6)


@pytest.mark.parametrize("budget", [1, 10, 33, 150, 400])
def test_round_robin_matches_reference(budget):
    rng = np.random.default_rng(budget)
    x = unit(rng, 300, 6)
    t = unit(rng, 5, 6)
    tasks = ["a", "a", "a", "b", "c"]
    got = rds_select(x, t, np.asarray(tasks, dtype=object), budget, chunk=50)
    assert got.tolist() == ref_rds(x, t, tasks, budget)
    assert len(got) == min(budget, 300) == len(set(got.tolist()))
    if budget >= 30:   # tasks take equal shares whatever their number of examples
        first = {tk: 0 for tk in "abc"}
        for i, p in enumerate(got.tolist()[:30]):
            first["abc"[i % 3]] += 1
        assert set(first.values()) == {10}


def ref_rds_scripts(x: np.ndarray, t: np.ndarray, tasks: list[str], budget: int) -> list[int]:
    """The released scripts' rules, transcribed from their description: dense similarities; one task: each
    example pops its next-best item per turn, and a pop of an already-taken item is a lost turn; several
    tasks: each item's task score is its max over the task's examples, each task sorts by it, and the
    tasks pop in turn, again losing the turn on an item already taken."""
    sims = x.astype(np.float64) @ t.astype(np.float64).T
    budget = min(budget, len(x))
    order = list(dict.fromkeys(tasks))
    if len(order) == 1:
        lists = [sorted(range(len(x)), key=lambda i: (-sims[i, q], i)) for q in range(len(t))]
    else:
        lists = []
        for tk in order:
            score = {i: max(sims[i, q] for q in range(len(t)) if tasks[q] == tk) for i in range(len(x))}
            lists.append(sorted(range(len(x)), key=lambda i: (-score[i], i)))
    picks: list[int] = []
    while len(picks) < budget:
        for lst in lists:
            if len(picks) == budget:
                break
            item = lst.pop(0)
            if item not in picks:
                picks.append(item)
    return picks


@pytest.mark.parametrize("budget", [1, 10, 33, 150, 300])
@pytest.mark.parametrize("tasks", [["a"] * 5, ["a", "a", "a", "b", "c"], ["a", "b", "a", "b", "b"]])
def test_reference_rule_matches_the_transcribed_scripts(budget, tasks):
    rng = np.random.default_rng(budget + len(set(tasks)))
    x = unit(rng, 300, 6)
    t = unit(rng, 5, 6)
    got = rds_select(x, t, np.asarray(tasks, dtype=object), budget, chunk=50, rule="reference")
    assert got.tolist() == ref_rds_scripts(x, t, tasks, budget)
    assert len(got) == min(budget, 300) == len(set(got.tolist()))


def test_reference_and_balanced_rules_differ_as_documented():
    rng = np.random.default_rng(7)
    x = unit(rng, 400, 4)
    t = unit(rng, 6, 4)
    one = np.asarray(["a"] * 6, dtype=object)
    bal = rds_select(x, t, one, 120, rule="balanced")
    ref = rds_select(x, t, one, 120, rule="reference")
    assert bal.tolist() != ref.tolist()          # lost turns change some picks
    two = np.asarray(["a", "a", "a", "a", "a", "b"], dtype=object)
    ref2 = rds_select(x, t, two, 40, rule="reference")
    # with the aggregated rule task a is one list (max over its examples): its picks are the top of that max
    score_a = (x @ t[:5].T).max(axis=1)
    top_a = np.argsort(-score_a, kind="stable")
    picks_a = ref2.tolist()[0::2]
    assert set(picks_a) <= set(top_a[:40].tolist())
    with pytest.raises(ConfigError, match="rule"):
        rds_select(x, t, one, 10, rule="fair")


def test_identical_targets_force_the_larger_k_retry():
    rng = np.random.default_rng(1)
    x = unit(rng, 200, 4)
    t = np.repeat(unit(rng, 1, 4), 3, axis=0)      # three examples with the same ranking
    got = rds_select(x, t, np.asarray(["a"] * 3, dtype=object), 120, chunk=32)
    order = np.argsort(-(x @ t[0]), kind="stable")[:120]
    assert got.tolist() == order.tolist()


# ------------------------------------------------------------------------------------------------ selector

def _write(path: Path, pairs: list[tuple[str, str]]) -> str:
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": u},
                                                     {"role": "assistant", "content": a}]}) + "\n"
                            for u, a in pairs))
    return str(path)


POOL = [("How do I bake sourdough bread?", "Feed the starter, knead, proof overnight, bake hot."),
        ("Which planet has the most moons?", "Saturn, with well over a hundred known moons."),
        ("Give me a pasta recipe with garlic.", "Boil spaghetti, fry garlic in olive oil, toss."),
        ("What is a black hole?", "A region where gravity stops even light escaping."),
        ("How do I sort a list in Python?", "Use sorted(xs) or xs.sort()."),
        ("What is the boiling point of water?", "100 degrees Celsius at sea level.")]


def _pool_and_context(embedding: dict) -> tuple[pa.Table, SelectionContext]:
    from scoring_tiny import msgs, pool_table

    pool = pool_table([msgs(("user", u), ("assistant", a)) for u, a in POOL])
    sig = make(signal_class("embedding"), {k: v for k, v in embedding.items() if k != "name"}, "test")

    def loader(spec: dict) -> np.ndarray:
        assert spec == embedding
        return sig.compute(pool)["embedding"]

    return pool, SelectionContext(pool=pool, signals=pa.table({"_": pa.nulls(len(pool))}).drop(["_"]),
                                  vector_loader=loader)


def test_selector_static_embeddings_two_tasks(tmp_path):
    pytest.importorskip("static_model")
    cooking = _write(tmp_path / "cooking.jsonl", [POOL[2]])              # an exact copy of pool row 2
    space = _write(tmp_path / "space.jsonl", [POOL[1], POOL[3]])         # exact copies of rows 1 and 3
    spec = {"backend": "static", "segment": "conversation"}
    sel = make(selector_class("rds"), {"targets": [cooking, space], "embedding": spec}, "rds")
    _, ctx = _pool_and_context({"name": "embedding", **spec})
    res = sel.run(ctx, np.arange(6, dtype=np.int64), 4)
    # tasks alternate (cooking, space, cooking, space); space's examples alternate (row 1's, then row 3's)
    v = ctx.embeddings(sel.embedding).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    cook_next = max((i for i in range(6) if i not in (1, 2)), key=lambda i: float(v[i] @ v[2]))
    assert res.kept.tolist() == [2, 1, cook_next, 3]
    assert res.details == {"targets": 3, "tasks": {"cooking": 1, "space": 2}}
    assert res.dropped == {"over_budget": 2}


def test_selector_causal_lm_weighted_mean(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from scoring_tiny import build_tiny_lm

    model = str(build_tiny_lm(tmp_path / "tiny"))
    target = _write(tmp_path / "t.jsonl", [POOL[4]])
    sel = make(selector_class("rds"), {"targets": target, "model": model}, "rds")
    assert sel.embedding == {"name": "embedding", "backend": "causal-lm", "model": model,
                             "pooling": "weighted-mean", "segment": "conversation"}
    _, ctx = _pool_and_context(sel.embedding)
    res = sel.run(ctx, np.asarray([0, 2, 3, 4, 5], dtype=np.int64), 3)
    assert res.kept[0] == 4                       # the pool copy of the target: cosine 1
    assert len(res.kept) == 3


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="targets"):
        make(selector_class("rds"), {"model": "m"}, "rds")
    with pytest.raises(ConfigError, match="model"):
        make(selector_class("rds"), {"targets": "x.jsonl"}, "rds")
    with pytest.raises(ConfigError, match="either"):
        make(selector_class("rds"), {"targets": "x.jsonl", "model": "m", "embedding": "static"}, "rds")
