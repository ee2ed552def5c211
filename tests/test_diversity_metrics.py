"""Diversity metrics against direct numpy computations."""

from __future__ import annotations

import numpy as np
import pytest

from diversity_helpers import blobs, unit
from siftkit.diversity import cluster_entropy, coverage, diversity_report, projection_2d, vendi_score


def test_coverage_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    x = unit(rng, 500, 8).astype(np.float16)
    sel = rng.choice(500, 40, replace=False)
    got = coverage(x, sel, sample=None)
    xf = x.astype(np.float64)
    xf /= np.linalg.norm(xf, axis=1, keepdims=True)
    d = np.clip(1 - (xf @ xf[sel].T).max(axis=1), 0, 2)
    assert got["points"] == 500
    assert got["mean"] == pytest.approx(d.mean(), abs=1e-5)
    assert got["p95"] == pytest.approx(np.percentile(d, 95), abs=1e-5)
    assert coverage(x, np.arange(500), sample=None)["mean"] == pytest.approx(0, abs=1e-5)
    sampled = coverage(x, sel, sample=200, seed=1)
    assert sampled["points"] == 200 and sampled == coverage(x, sel, sample=200, seed=1)


def test_cluster_entropy() -> None:
    labels = np.repeat(np.arange(4), 25)
    even = cluster_entropy(labels, np.arange(0, 100, 5))
    assert even["normalized"] == pytest.approx(1.0) and even["clusters_hit"] == 4
    one = cluster_entropy(labels, np.arange(10))
    assert one["entropy"] == pytest.approx(0.0) and one["clusters_hit"] == 1
    p = np.array([3, 1]) / 4
    assert cluster_entropy(labels, [0, 1, 2, 30])["entropy"] == pytest.approx(-(p * np.log(p)).sum())


def test_vendi_score_matches_kernel_definition() -> None:
    rng = np.random.default_rng(1)
    x = unit(rng, 60, 10)
    k = x.astype(np.float64) @ x.astype(np.float64).T / 60
    lam = np.linalg.eigvalsh(k)
    lam = lam[lam > 1e-12]
    expected = np.exp(-(lam * np.log(lam)).sum())
    assert vendi_score(x, sample=None) == pytest.approx(expected, rel=1e-5)
    assert vendi_score(np.tile(x[:1], (30, 1)), sample=None) == pytest.approx(1.0)
    assert vendi_score(np.eye(10, dtype=np.float32), sample=None) == pytest.approx(10.0)
    assert vendi_score(x, rows=np.array([0, 0, 0]), sample=None) == pytest.approx(1.0)


def test_projection_and_report_shapes() -> None:
    rng = np.random.default_rng(2)
    x, _ = blobs(rng, [100, 100, 100], d=12)
    sel = np.arange(0, 300, 10)
    m = projection_2d(x, sel, sample=120, seed=0)
    assert len(m["pool"]["x"]) == 120 and len(m["selected"]["y"]) == 30
    assert m["explained_variance"][0] >= m["explained_variance"][1] > 0
    pytest.importorskip("faiss")
    rep = diversity_report(x, sel, k=3, sample=100)
    assert rep["cluster_entropy"]["clusters_hit"] == 3
    assert rep["vendi"]["pool"] > 1 and rep["coverage"]["mean"] < 0.1
    skewed = diversity_report(x, np.arange(30), k=3, sample=100)   # all from one blob
    assert skewed["cluster_entropy"]["normalized"] < 0.1 < rep["cluster_entropy"]["normalized"]
    assert skewed["coverage"]["mean"] > rep["coverage"]["mean"]
