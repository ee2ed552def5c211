"""The lang signal: language code and confidence per record, mixed-language turns, both backends."""

from __future__ import annotations

import math

import numpy as np
import pytest

import siftkit
from conftest import convo, shared_pool_or_skip
from siftkit.errors import ConfigError
from siftkit.signals.lang import Lang

ROWS = [
    convo("What is the capital of France? Please answer briefly.", "The capital of France is Paris."),
    convo("请把这句话翻译成英文：今天天气很好。", "今天天气很好的英文是：The weather is nice today。我们可以出去散步。"),
    convo("请用中文介绍一下你自己，包括你的兴趣爱好。", "Sure! I am a helpful assistant and I enjoy reading books about history."),
    convo("Quelle est la capitale de l'Allemagne ? Réponds en une phrase.", "La capitale de l'Allemagne est Berlin."),
    convo("12345", "67890"),
]


def pool():
    return siftkit.read([{"data": ROWS, "source": "t"}]).table


@pytest.mark.parametrize("backend", ["py3langid", "lingua"])
def test_codes_and_mixed_turns(backend):
    pytest.importorskip("py3langid" if backend == "py3langid" else "lingua")
    sig = Lang(backend=backend, per_turn=True, min_chars=10, min_conf=0.5)
    out = sig.compute(pool())
    assert out["lang"][0] == "en" and out["lang"][1] == "zh" and out["lang"][3] == "fr"
    assert out["lang"][4] == "" and math.isnan(out["lang_conf"][4])            # no letters
    assert np.all((out["lang_conf"][:4] > 0) & (out["lang_conf"][:4] <= 1))
    assert out["lang_turns"][2] == "zh,en"
    assert out["lang_mixed"].tolist() == [0, 0, 1, 0, 0]


def test_config_and_errors():
    with pytest.raises(ConfigError, match="backend"):
        Lang(backend="cld9")
    with pytest.raises(ConfigError, match="segment"):
        Lang(segment="turns")
    assert set(Lang().columns()) == {"lang", "lang_conf"}
    assert Lang().requirements() == {"py3langid": Lang.requires_for}
    assert Lang().fingerprint() != Lang(segment="query").fingerprint()


def test_missing_backend_is_a_clean_error(monkeypatch):
    import sys

    from siftkit.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "py3langid", None)     # import py3langid now fails
    with pytest.raises(MissingDependencyError, match="clean"):
        Lang().setup()


def test_filter_on_lang_in_a_selection(tmp_path):
    pytest.importorskip("py3langid")
    sel = siftkit.select([{"data": ROWS, "source": "t"}], "100%", filters=['lang == "zh"'],
                         cache_dir=str(tmp_path / "c"))
    assert sel.selected.tolist() == [1, 2]     # 2: a Chinese question (and an English answer)


def test_shared_pool_zh_en_sources():
    root = shared_pool_or_skip()
    pytest.importorskip("py3langid")
    p = siftkit.read([str(root / "sharegpt_zh_1k.jsonl"), str(root / "lima_train.jsonl")])
    t = p.table
    src = np.asarray(t.column("source").to_pylist())
    take = np.concatenate([np.flatnonzero(src == s)[:150] for s in np.unique(src)])
    out = Lang(segment="query").compute(t.take(take))
    for s, want in (("sharegpt_zh_1k", "zh"), ("lima_train", "en")):
        m = src[take] == s
        assert (out["lang"][m] == want).mean() > 0.9, s
