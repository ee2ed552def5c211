"""ifd-filter drops IFD > threshold and unscored records, in pool order, naming the reasons."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from siftkit.errors import ConfigError
from siftkit.registry import selector_class
from siftkit.selectors.base import SelectionContext


def ctx(values):
    n = len(values)
    pool = pa.table({"id": [f"r{i}" for i in range(n)], "source": ["s"] * n})
    sig = pa.table({"lm_ifd": pa.array(values, pa.float64()),
                    "lm_ifd_ppl": pa.array([v if np.isnan(v) else np.exp(np.log(v)) for v in values], pa.float64())})
    return SelectionContext(pool=pool, signals=sig, seed=0)


def test_drops_over_one_and_missing():
    c = ctx([0.5, 1.2, float("nan"), 1.0, 0.99, 3.0])
    sel = selector_class("ifd-filter")()
    assert sel.role == "filter" and sel.needs() == ["lm_ifd"]
    res = sel.run(c, np.arange(6), None)
    assert res.kept.tolist() == [0, 3, 4]            # IFD == 1 is kept: only IFD > 1 is dropped
    assert res.dropped == {"lm_ifd > 1": 2, "lm_ifd missing": 1}
    res = sel.run(c, np.array([1, 2, 4]), None)      # respects the candidate subset
    assert res.kept.tolist() == [4]


def test_options():
    c = ctx([0.5, 1.2, float("nan"), 0.8])
    sel = selector_class("ifd-filter")(threshold=0.7, keep_missing=True)
    assert sel.run(c, np.arange(4), None).kept.tolist() == [0, 2]
    sel = selector_class("ifd-filter")(column="lm_ifd_ppl")
    assert sel.run(c, np.arange(4), None).kept.tolist() == [0, 3]
    with pytest.raises(ConfigError, match="threshold"):
        selector_class("ifd-filter")(threshold=-1)
