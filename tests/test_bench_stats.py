"""Mann-Whitney U against random: exact small-sample p-values, direction for losses, the table layout."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("scipy")

from siftkit.bench.stats import compare, mann_whitney, min_attainable_p, summary


def test_one_run_above_all_random_gives_the_minimum_p() -> None:
    t = mann_whitney([0.9], [0.1, 0.2, 0.3, 0.4, 0.5])
    assert t["p"] == pytest.approx(1 / 6) and t["min_p"] == pytest.approx(1 / 6) and t["exact"]
    assert t["u"] == 5.0 and t["alternative"] == "greater"


def test_one_run_below_all_random_gives_p_one() -> None:
    assert mann_whitney([0.0], [0.1, 0.2, 0.3, 0.4, 0.5])["p"] == pytest.approx(1.0)


def test_middle_rank_and_exact_count() -> None:
    # method beats 3 of 5 random runs: P(U >= 3) under H0 = 3/6
    assert mann_whitney([0.35], [0.1, 0.2, 0.3, 0.4, 0.5])["p"] == pytest.approx(3 / 6)
    # 5 vs 5, all method runs above: 1 / C(10, 5)
    t = mann_whitney([1, 2, 3, 4, 5], [-5, -4, -3, -2, -1])
    assert t["p"] == pytest.approx(1 / math.comb(10, 5)) == t["min_p"]


def test_losses_use_the_lower_tail() -> None:
    t = mann_whitney([1.0], [2.0, 3.0, 4.0], higher_is_better=False)
    assert t["alternative"] == "less" and t["p"] == pytest.approx(1 / 4)
    assert mann_whitney([5.0], [2.0, 3.0, 4.0], higher_is_better=False)["p"] == pytest.approx(1.0)


def test_ties_fall_back_to_the_asymptotic_test_and_missing_values() -> None:
    t = mann_whitney([0.5], [0.5, 0.5, 0.5])
    assert not t["exact"] and 0 < t["p"] <= 1
    assert mann_whitney([], [0.1, 0.2])["p"] is None
    assert mann_whitney([float("nan")], [0.1])["n_method"] == 0


def test_min_attainable_p() -> None:
    assert min_attainable_p(1, 5) == pytest.approx(1 / 6)
    assert min_attainable_p(2, 3) == pytest.approx(1 / 10)
    assert min_attainable_p(0, 3) == 1.0


def test_summary_mean_std() -> None:
    s = summary([1.0, 2.0, 4.0])
    assert s["mean"] == pytest.approx(7 / 3) and s["std"] == pytest.approx(1.5275252, rel=1e-6)
    assert summary([3.0])["std"] is None and summary([])["mean"] is None


def test_compare_table() -> None:
    cells = {"random": {0: {"a": 0.1, "b": 0.5, "loss": 2.0}, 1: {"a": 0.2, "b": 0.4, "loss": 2.2},
                        2: {"a": 0.3, "b": 0.6, "loss": 2.1}},
             "m": {0: {"a": 0.9, "b": 0.1, "loss": 1.0}}}
    res = compare(cells, ["a", "b", "loss"], {"a": True, "b": True, "loss": False})
    assert res["columns"] == ["a", "b", "loss", "average"] and res["average_of"] == ["a", "b"]
    r, m = res["methods"]["random"], res["methods"]["m"]
    assert "test" not in r["a"] and r["average"]["values"] == pytest.approx([0.3, 0.3, 0.45])
    assert m["a"]["test"]["p"] == pytest.approx(1 / 4)        # above every random run
    assert m["b"]["test"]["p"] == pytest.approx(1.0)          # below every random run
    assert m["loss"]["test"]["p"] == pytest.approx(1 / 4)     # lowest loss
    assert m["average"]["values"] == [pytest.approx(0.5)] and m["average"]["test"]["p"] == pytest.approx(1 / 4)
