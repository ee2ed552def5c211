"""The published presets: every step and signal builds, model-less presets fail clearly, ZIP runs end to end."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from siftkit.config import build_config
from siftkit.errors import ConfigError
from siftkit.pipeline import make_selector, plan_signals, run_selection
from siftkit.presets import PRESETS as ALL_PRESETS

# the published methods (the study's baselines are tested in test_diversity_selectors / test_cli)
PUBLISHED = ("cherry-ifd", "superfiltering", "superfiltering-d", "deita", "quality-kmeans", "instag", "zip",
             "rds-plus", "less")
PRESETS = {n: ALL_PRESETS[n] for n in PUBLISHED}

OVERRIDES = {"rds-plus": {"targets": "t.jsonl", "model": "some/causal-lm"},
             "less": {"targets": "t.jsonl", "model": "some/causal-lm"}}


def recipe(name: str, pool: str, budget: int = 3) -> dict:
    p = copy.deepcopy(PRESETS[name])
    steps = p["steps"]
    for s in steps:
        if "select" in s:
            s.update(OVERRIDES.get(name, {}))
    return {"inputs": [pool], "steps": steps, "signals": p.get("signals", []), "budget": budget,
            "cache_dir": str(Path(pool).parent / "cache")}


@pytest.fixture
def pool(tmp_path: Path) -> str:
    rows = [{"messages": [{"role": "user", "content": f"question {i} about topic {i % 3}"},
                          {"role": "assistant", "content": " ".join(f"w{(i * j) % 17}" for j in range(5 + i))}]}
            for i in range(12)]
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds(name, pool):
    assert PRESETS[name]["doc"]
    cfg = build_config(recipe(name, pool), name)
    selectors = [make_selector(s) for s in cfg.steps]
    assert [s.role for s in cfg.steps].count("select") == 1
    if name in ("cherry-ifd", "quality-kmeans"):
        # scored with the user's own model: a clear error until an lm_loss signal is listed
        with pytest.raises(ConfigError, match="no signal provides column 'lm_"):
            plan_signals(cfg, selectors)
        cfg2 = build_config({**recipe(name, pool), "signals": [{"name": "lm_loss", "model": "my/base"}]}, name)
        sigs = plan_signals(cfg2, [make_selector(s) for s in cfg2.steps])
    else:
        sigs = plan_signals(cfg, selectors)
    names = {s.name for s in sigs}
    for s in PRESETS[name].get("signals", []):
        assert s["name"] in names


def test_superfiltering_scores_with_gpt2(pool):
    cfg = build_config(recipe("superfiltering", pool), "t")
    sigs = plan_signals(cfg, [make_selector(s) for s in cfg.steps])
    lm = [s for s in sigs if s.name == "lm_loss"]
    assert len(lm) == 1 and lm[0].model == "gpt2"


def test_zip_preset_runs_end_to_end(pool):
    data = recipe("zip", pool, budget=4)
    data["steps"][-1].update(k1=8, k2=6, k3=2)
    sel = run_selection(build_config(data, "zip"))
    assert len(sel.selected) == 4


def test_recipe_signal_providing_a_presets_columns_replaces_its_signal():
    """A recipe that lists its own signal for a preset's columns (lm_loss on another model) gets no second
    signal from the preset (before, the preset's hub-model signal was added too: two signals, one column);
    a recipe signal with other columns leaves the preset's signal in."""
    from siftkit.config import build_config

    own = {"name": "lm_loss", "model": "/models/mine", "template": "superfiltering", "ifd_tokens": "reference"}
    cfg = build_config({"inputs": ["x.jsonl"], "preset": "superfiltering", "budget": 10, "signals": [own]})
    assert cfg.signals == [own]
    cfg = build_config({"inputs": ["x.jsonl"], "preset": "superfiltering", "budget": 10, "signals": ["text_stats"]})
    assert cfg.signals[0] == "text_stats" and [s["model"] for s in cfg.signals[1:]] == ["gpt2"]
