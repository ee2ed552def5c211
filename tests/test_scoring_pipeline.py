"""lm_loss + ifd-filter through a recipe (the Python API), cached between runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from scoring_tiny import SAMPLES, build_tiny_lm, msgs
from siftkit.scoring.base import reason_counts


def test_recipe_with_ifd_filter(tmp_path):
    from siftkit import api

    model = str(build_tiny_lm(tmp_path / "tiny"))
    convs = [[dict(m, content=f"{m['content']} v{i}") for m in SAMPLES[i % 5]] for i in range(30)]
    convs.append(msgs(("user", "a very long question " * 80), ("assistant", "short")))
    with open(tmp_path / "pool.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"messages": c}) + "\n" for c in convs)
    recipe = {"inputs": [str(tmp_path / "pool.jsonl")], "cache_dir": str(tmp_path / "cache"),
              "signals": [{"name": "lm_loss", "model": model, "max_length": 128, "truncation": "error"}],
              "steps": [{"step": "ifd-filter"}, {"select": "top", "by": "lm_ifd"}], "budget": 5}
    sel, _ = api.run(recipe, write=False)
    sig = sel.signals
    ifd = sig.column("lm_ifd").to_numpy(zero_copy_only=False)
    kept = np.asarray(sel.selected) if hasattr(sel, "selected") else np.flatnonzero(sel.status == "selected")
    assert len(kept) == 5 and (ifd[kept] <= 1).all()
    eligible = np.sort(ifd[np.isfinite(ifd) & (ifd <= 1)])[::-1]
    np.testing.assert_allclose(np.sort(ifd[kept])[::-1], eligible[:5])
    assert reason_counts(sig)["lm_loss_reason"] == {"too_long": 1}
    dropped = [s for s in sel.status if str(s).startswith("dropped:")]
    assert len(dropped) == int((~(ifd <= 1)).sum())       # IFD > 1 and the unscored record
