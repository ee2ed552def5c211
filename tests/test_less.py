"""LESS: projection, batched per-sample LoRA gradients, Adam directions, warm-up checkpoints, the selector."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from scoring_tiny import SAMPLES, build_tiny_lm, msgs, pool_table
from siftkit.errors import ConfigError
from siftkit.less.grads import AdamState, adam_direction, gradient_features, per_sample_grads
from siftkit.less.projection import RademacherProjector, rademacher_rows
from siftkit.selectors.less import less_scores

# ------------------------------------------------------------------------------------------- projection

@pytest.mark.parametrize("kind", ["pcg64", "hash"])
def test_rademacher_rows_do_not_depend_on_chunking_or_start(kind: str) -> None:
    full = rademacher_rows(0, 300, 64, seed=7, kind=kind)
    assert set(torch.unique(full).tolist()) == {-1.0, 1.0}
    assert torch.equal(rademacher_rows(100, 50, 64, seed=7, kind=kind), full[100:150])
    assert not torch.equal(rademacher_rows(0, 300, 64, seed=8, kind=kind), full)
    x = torch.randn(5, 300)
    small = RademacherProjector(64, seed=7, cache_bytes=0, chunk_entries=1, kind=kind)   # row/block at a time
    big = RademacherProjector(64, seed=7, kind=kind)
    want = x @ full
    assert torch.allclose(small.project(x, 0), want, atol=1e-4)
    assert torch.allclose(big.project(x, 0), want, atol=1e-4)
    # two parameter blocks at their offsets sum to the whole projection
    assert torch.allclose(big.project(x[:, :120], 0) + big.project(x[:, 120:], 120), want, atol=1e-4)
    two = RademacherProjector(64, seed=7, chunk_entries=2 * 256 * 64, kind=kind)    # two blocks per chunk
    xl = torch.randn(3, 1000)
    want = xl[:, 10:900] @ rademacher_rows(10, 890, 64, seed=7, kind=kind)
    assert torch.allclose(two.project(xl[:, 10:900], 10), want, atol=1e-4)


def test_rademacher_definition_is_stable() -> None:
    """R is part of the cache's meaning (features computed today must match targets computed next year): its
    definition (PCG64 raw stream per 256-row block, bit j % 8 of byte j // 8) must not drift. Rows 254-257
    straddle blocks 0 and 1."""
    want = [[-1, 1, -1, -1, 1, 1, -1, -1, 1, 1, 1, -1], [-1, -1, 1, -1, 1, -1, -1, -1, -1, -1, 1, -1],
            [1, -1, -1, -1, 1, -1, 1, 1, -1, -1, -1, 1], [-1, 1, 1, 1, 1, -1, 1, 1, 1, -1, -1, -1]]
    assert rademacher_rows(254, 4, 12, seed=5).int().tolist() == want
    assert RademacherProjector(12, seed=5).project(torch.eye(4), 254).int().tolist() == want
    # the on-device hash stream (entry = 32-bit hash of seed and i * dim + j): also pinned
    want_hash = [[1, -1, -1, -1, -1, 1, 1, 1, -1, 1, -1, -1], [1, -1, 1, 1, -1, -1, 1, -1, -1, 1, -1, 1],
                 [-1, 1, -1, -1, -1, 1, -1, -1, 1, 1, 1, -1], [-1, -1, -1, -1, -1, 1, 1, -1, 1, -1, 1, 1]]
    assert rademacher_rows(254, 4, 12, seed=5, kind="hash").int().tolist() == want_hash
    assert RademacherProjector(12, seed=5, kind="hash").project(torch.eye(4), 254).int().tolist() == want_hash


@pytest.mark.parametrize("kind", ["pcg64", "hash"])
def test_rademacher_entries_look_independent_and_preserve_angles(kind: str) -> None:
    r = rademacher_rows(0, 2000, 1024, seed=0, kind=kind)
    assert abs(float(r.mean())) < 0.005                         # balanced signs over 2M entries
    c = (r[:, :512].T @ r[:, :512]) / 2000                      # column correlations
    off = c[~torch.eye(512, dtype=torch.bool)]
    assert float(off.abs().max()) < 0.15 and abs(float(off.mean())) < 0.005
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 2000, generator=g)
    x[1] = x[0] + 0.5 * x[1]                                    # a correlated pair
    px = x @ r
    cos = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(x, dim=1).T
    pcos = torch.nn.functional.normalize(px, dim=1) @ torch.nn.functional.normalize(px, dim=1).T
    assert float((cos - pcos).abs().max()) < 0.15               # JL: error ~ 1/sqrt(1024) per pair
    assert float(pcos[0, 1]) > 0.8


# -------------------------------------------------------------------------------------- per-sample grads

@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("less_tiny"))


def _lora_model(folder: Path, seed: int = 0):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(folder)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                     task_type="CAUSAL_LM", init_lora_weights=False)   # random B too: every gradient non-zero
    return get_peft_model(base, cfg).eval()


def _rows(folder: Path):
    from transformers import AutoTokenizer

    from siftkit.bench.train import build_examples

    tok = AutoTokenizer.from_pretrained(folder)
    return build_examples(SAMPLES, tok, "chat", 256).rows, tok


def _batch1(model, row):
    """Reference: batch size 1, the model's own loss on the masked tokens, autograd into .grad."""
    ids = torch.tensor([row["input_ids"]])
    labels = torch.where(torch.tensor([row["assistant_masks"]]) > 0, ids, torch.full_like(ids, -100))
    model.zero_grad()
    model(input_ids=ids, labels=labels).loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("fast_head", [False, True])
def test_batched_per_sample_grads_equal_batch_size_one(tiny: Path, fast_head: bool) -> None:
    model = _lora_model(tiny)
    rows, tok = _rows(tiny)
    assert len({len(r["input_ids"]) for r in rows}) > 1                # padding is exercised
    grads, _ = per_sample_grads(model, rows, tok.pad_token_id, "cpu", fast_head=fast_head)
    assert [n for n, _ in grads] == [n for n, p in model.named_parameters() if p.requires_grad]
    for b, row in enumerate(rows):
        ref = _batch1(model, row)
        for name, g in grads:
            want = ref[name]
            assert float(want.abs().max()) > 0
            assert torch.allclose(g[b], want, rtol=1e-4, atol=1e-6 * float(want.abs().max())), name


def test_adam_direction_formula() -> None:
    g = torch.tensor([[0.5, -2.0, 0.0]])
    m, v = torch.tensor([0.1, 0.2, -0.3]), torch.tensor([0.01, 0.04, 0.09])
    got = adam_direction(g, m, v, (0.9, 0.999), 1e-8)
    mm = 0.9 * m + 0.1 * g[0]
    vv = 0.999 * v + 0.001 * g[0] ** 2
    assert torch.allclose(got[0], mm / torch.sqrt(vv + 1e-8))


@pytest.mark.parametrize("kind", ["pcg64", "hash"])
def test_gradient_features_equal_a_dense_reference(tiny: Path, kind: str) -> None:
    model = _lora_model(tiny)
    rows, tok = _rows(tiny)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = dict(model.named_parameters())
    g0 = torch.Generator().manual_seed(1)
    m = {n: 0.01 * torch.randn(params[n].shape, generator=g0) for n in names}
    v = {n: 1e-4 * torch.rand(params[n].shape, generator=g0) for n in names}
    dim = 128
    proj = RademacherProjector(dim, seed=3, kind=kind)
    got_sgd = gradient_features(model, rows, tok.pad_token_id, "cpu", proj)
    got_adam = gradient_features(model, rows, tok.pad_token_id, "cpu", proj, AdamState(m, v))
    total = sum(params[n].numel() for n in names)
    dense = rademacher_rows(0, total, dim, seed=3, kind=kind)
    for b, row in enumerate(rows):
        ref = _batch1(model, row)
        flat = torch.cat([ref[n].reshape(-1) for n in names])
        ad = torch.cat([((0.9 * m[n] + 0.1 * ref[n]) / torch.sqrt(0.999 * v[n] + 0.001 * ref[n] ** 2 + 1e-8))
                        .reshape(-1) for n in names])
        for got, vec in ((got_sgd, flat), (got_adam, ad)):
            want = torch.nn.functional.normalize(vec @ dense, dim=0).numpy()
            assert np.allclose(got[b], want, atol=2e-5)
            assert abs(np.linalg.norm(got[b]) - 1) < 1e-5


def test_less_scores_equal_a_dense_reference() -> None:
    rng = np.random.default_rng(0)
    n, d = 50, 16
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
    feats = [unit(rng.normal(size=(n, d))).astype(np.float16) for _ in range(2)]
    targets = [unit(rng.normal(size=(5, d))).astype(np.float32) for _ in range(2)]
    tasks = np.array(["a", "b", "a", "b", "b"], dtype=object)
    lrs = [2e-5, 1e-5]
    rows = np.arange(3, 50, 2)
    score, per_task = less_scores(feats, targets, lrs, tasks, rows, chunk=7)
    for k, r in enumerate(rows):
        want = {}
        for tk in ("a", "b"):
            idx = np.flatnonzero(tasks == tk)
            want[tk] = sum(lr * np.mean([float(f[r].astype(np.float32) @ t[q]) for q in idx])
                           for f, t, lr in zip(feats, targets, lrs))
        assert per_task[k] == pytest.approx([want["a"], want["b"]], rel=1e-5)
        assert score[k] == pytest.approx(max(want.values()), rel=1e-5)


# ----------------------------------------------------------------------------------- warm-up + selector

TOPIC_A = [("What is {} plus {}?", "{} plus {} is {}.")]
TOPIC_B = [("Write a line about the {}.", "The {} is blue and wide, the {} is calm.")]


def _pool_convs() -> list[list[dict[str, str]]]:
    convs = []
    for i in range(12):
        convs.append(msgs(("user", f"What is {i} plus {i + 1}?"), ("assistant", f"{i} plus {i + 1} is {2 * i + 1}.")))
        w = ["sea", "sky", "lake", "river", "rain", "cloud"][i % 6]
        convs.append(msgs(("user", f"Write a line about the {w}."), ("assistant", f"The {w} is blue and wide.")))
    # the prompt alone is longer than max_length: truncated before the answer, nothing to take a gradient of
    convs.append(msgs(("user", "Write about the sea. " * 40), ("assistant", "The sea.")))
    return convs


def _write_jsonl(path: Path, convs: list[list[dict[str, str]]]) -> str:
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs))
    return str(path)


TRAIN = {"epochs": 2, "batch_size": 4, "micro_batch_size": 2, "lora_r": 4, "lora_alpha": 8, "lr": 1e-3,
         "warmup": 0.0, "max_length": 128}


def test_warmup_writes_one_checkpoint_per_epoch_and_is_reused(tiny: Path, tmp_path: Path) -> None:
    pytest.importorskip("trl")
    from safetensors.torch import load_file

    from siftkit.less.warmup import warmup

    table = pool_table(_pool_convs())
    ck = warmup(table, np.arange(8), model=str(tiny), cache_dir=str(tmp_path), seed=0, train=TRAIN)
    assert [c.epoch for c in ck] == [1, 2]
    names = ck[0].meta["params"]
    assert names and all("lora_" in n for n in names)
    w1, w2 = load_file(os.path.join(ck[0].path, "weights.safetensors")), load_file(
        os.path.join(ck[1].path, "weights.safetensors"))
    assert any(not torch.equal(w1[n], w2[n]) for n in names)    # training moved the LoRA weights
    adam = load_file(os.path.join(ck[1].path, "adam.safetensors"))
    for n in names:
        assert adam[f"{n}.exp_avg"].shape == w1[n].shape and float(adam[f"{n}.exp_avg_sq"].min()) >= 0
    assert ck[0].meta["steps"] == 2 and ck[0].lr > 0               # 8 records / batch 4
    # linear decay over 4 steps, no warm-up: 1e-3, 7.5e-4 | 5e-4, 2.5e-4; the epoch means
    assert ck[0].lr == pytest.approx(8.75e-4) and ck[1].lr == pytest.approx(3.75e-4)
    before = os.path.getmtime(os.path.join(ck[0].path, "meta.json"))
    again = warmup(table, np.arange(8), model=str(tiny), cache_dir=str(tmp_path), seed=0, train=TRAIN)
    assert [c.fingerprint for c in again] == [c.fingerprint for c in ck]
    assert os.path.getmtime(os.path.join(ck[0].path, "meta.json")) == before
    other = warmup(table, np.arange(1, 9), model=str(tiny), cache_dir=str(tmp_path), seed=0, train=TRAIN)
    assert other[0].fingerprint != ck[0].fingerprint


def _run(tiny: Path, tmp_path: Path, cache: Path, out: str, **params):
    from siftkit.api import run

    pool = _write_jsonl(tmp_path / "pool.jsonl", _pool_convs())
    tgt = tmp_path / "targets"
    tgt.mkdir(exist_ok=True)
    ta = _write_jsonl(tgt / "math.jsonl", [msgs(("user", "What is 20 plus 21?"), ("assistant", "20 plus 21 is 41.")),
                                           msgs(("user", "What is 3 plus 30?"), ("assistant", "3 plus 30 is 33."))])
    tb = _write_jsonl(tgt / "poems.jsonl", [msgs(("user", "Write a line about the moon."),
                                                 ("assistant", "The moon is white and round."))])
    recipe = {"inputs": [pool], "budget": 6, "seed": 1, "cache_dir": str(cache),
              "steps": [{"select": "less", "model": str(tiny), "targets": [ta, tb], "dim": 256, "train": TRAIN,
                        "warmup_fraction": 0.34, "max_length": 96, **params}]}
    sel, _ = run(recipe, write=False)
    return sel


def test_less_selector_end_to_end(tiny: Path, tmp_path: Path) -> None:
    pytest.importorskip("trl")
    from siftkit.io.pool import read_pool
    from siftkit.signals.vectors import load_or_compute_vectors

    cache = tmp_path / "cache"
    sel = _run(tiny, tmp_path, cache, "a")
    assert len(sel.selected) == 6
    rep = next(s for s in sel.steps if s.name == "less")
    assert rep.dropped.get("no_gradient") == 1
    ckpts = rep.details["checkpoints"]
    assert [c["epoch"] for c in ckpts] == [1, 2] and len(rep.details["tasks"]) == 2
    # independent recomputation of the scores from the cached features and freshly computed target features
    from siftkit.less.signal import LessGrads
    from siftkit.scoring.base import conversations

    pool = read_pool([str(tmp_path / "pool.jsonl")]).table
    tgt = read_pool([str(tmp_path / "targets" / "math.jsonl"), str(tmp_path / "targets" / "poems.jsonl")]).table
    tconv = conversations(tgt)[0]
    tasks = np.asarray(tgt.column("source").to_pylist(), dtype=object)
    # (the per-task sum must be taken before the max across tasks)
    per_task = np.zeros((len(pool), 2))
    for c in ckpts:
        spec = {"name": "less_grads", "model": str(tiny), "checkpoint": c["path"], "adam": True, "dim": 256,
                "max_length": 96}
        x = np.asarray(load_or_compute_vectors(pool, spec, str(cache)), dtype=np.float64)
        t = LessGrads(str(tiny), c["path"], adam=False, dim=256, max_length=96).encode(tconv).astype(np.float64)
        sims = x @ t.T
        per_task += c["lr"] * np.stack([sims[:, tasks == tk].mean(axis=1) for tk in dict.fromkeys(tasks.tolist())],
                                       axis=1)
    score = per_task.max(axis=1)
    finite = np.isfinite(score)
    want = np.flatnonzero(finite)[np.argsort(-score[finite], kind="stable")][:6]
    got_rows = np.sort(np.asarray(sel.selected))
    assert set(got_rows.tolist()) == set(want.tolist())
    # deterministic: a second run from the same cache selects the same rows in the same order
    again = _run(tiny, tmp_path, cache, "b")
    assert np.array_equal(np.asarray(again.selected), np.asarray(sel.selected))


def test_less_config_errors(tiny: Path, tmp_path: Path) -> None:
    from siftkit.selectors.less import LESSSelect

    with pytest.raises(ConfigError, match="model"):
        LESSSelect(targets="x")
    with pytest.raises(ConfigError, match="targets"):
        LESSSelect(model="m")
    with pytest.raises(ConfigError, match="warmup_fraction"):
        LESSSelect(model="m", targets="x", warmup_fraction=0)
    with pytest.raises(ConfigError, match="unknown key"):
        LESSSelect(model="m", targets="x", train={"epoch": 3})
    with pytest.raises(ConfigError, match="lora"):
        LESSSelect(model="m", targets="x", train={"mode": "full"})
    with pytest.raises(ConfigError, match="projection"):
        LESSSelect(model="m", targets="x", projection="gaussian")
    with pytest.raises(ConfigError, match="meta.json"):
        from siftkit.less.signal import LessGrads

        LessGrads("m", str(tmp_path))


def test_less_differentiates_only_the_candidates_and_keeps_features_out_of_the_report(tiny: Path,
                                                                                       tmp_path: Path) -> None:
    pytest.importorskip("trl")
    import pyarrow.parquet as pq

    from siftkit.api import run
    from siftkit.output import diversity_sections

    convs = _pool_convs()[:10]
    pool = _write_jsonl(tmp_path / "pool.jsonl", convs + convs[:3])          # 3 exact duplicates
    tgt = _write_jsonl(tmp_path / "t.jsonl", convs[:1])
    cache = tmp_path / "cache"
    recipe = {"inputs": [pool], "budget": 4, "seed": 0, "cache_dir": str(cache),
              "steps": [{"dedup": "exact"},
                        {"select": "less", "model": str(tiny), "targets": tgt, "dim": 64, "train": TRAIN,
                         "warmup_fraction": 0.3}]}
    sel, _ = run(recipe, write=False)
    assert sel.steps[0].n_out == 10 and len(sel.selected) == 4
    parts = list((cache / "vectors" / "less_grads").rglob("shard-*.ids.parquet"))
    ids = [i for p in parts for i in pq.read_table(p).column(0).to_pylist()]
    assert len(ids) == 2 * 10 == 2 * len(set(ids))          # 2 checkpoints x the 10 candidates, no duplicate
    assert sel.vectors == {} and diversity_sections(sel) == []


def test_less_runs_as_a_bench_method(tiny: Path, tmp_path: Path) -> None:
    """``siftkit bench`` runs LESS like any recipe: selection (warm-up + gradients), fine-tune, evaluation."""
    pytest.importorskip("trl")
    pytest.importorskip("scipy")
    from bench_helpers import config, write_eval, write_pool
    from siftkit.bench.config import build_bench_config
    from siftkit.bench.runner import run_bench

    targets = _write_jsonl(tmp_path / "t.jsonl", [msgs(("user", "What is 2 plus 3?"), ("assistant", "5"))])
    method = {"steps": [{"select": "less", "model": str(tiny), "targets": targets, "dim": 64,
                         "warmup_fraction": 0.2, "train": {**TRAIN, "epochs": 1}}]}
    raw = config(tmp_path, tiny, write_pool(tmp_path / "pool"), write_eval(tmp_path / "eval"),
                 random_seeds=1, methods={"less": method},
                 eval={"tasks": ["heldout"], "limit": 5, "data_dir": str(tmp_path / "eval")})
    run_bench(build_bench_config(raw))
    cell = tmp_path / "out" / "budget-8" / "less" / "seed-0"
    manifest = json.loads((cell / "selection" / "manifest.json").read_text())
    assert manifest["counts"]["selected"] == 8 and manifest["steps"][-1]["name"] == "less"
    done = json.loads((cell / "done.json").read_text())
    assert np.isfinite(done["scores"]["heldout"])
