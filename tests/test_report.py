"""The HTML report, Python side: bins, source mix, escaping, counts, edge cases, size at 1M rows."""

from __future__ import annotations

import json
import re
import time
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from siftkit.io.pool import MESSAGE_TYPE, canonical_table
from siftkit.report import data as D
from siftkit.report import render_report

HOSTILE = '<script>alert("x")</script><img src=x onerror="alert(1)">&amp;</textarea>'


def make_pool(n: int, seed: int = 0, sources=("alpaca", "sharegpt", "gsm8k")) -> pa.Table:
    rng = np.random.default_rng(seed)
    src = [sources[i] for i in rng.integers(0, len(sources), n)]
    msgs = [[{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]
            for i in range(n)]
    return canonical_table({"id": [f"{i:016x}" for i in range(n)], "source": src, "file": ["a.jsonl"] * n,
                            "row": np.arange(n), "line": np.arange(n) + 1, "messages": msgs,
                            "original": ["{}"] * n})


def make_signals(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    tq = rng.lognormal(3, 1, n).astype(np.int64) + 1
    tr = rng.lognormal(5, 1, n).astype(np.int64) + 1
    return pa.table({"tokens_query": tq, "tokens_response": tr, "tokens_total": tq + tr,
                     "chars_total": (tq + tr) * 4, "turns": rng.choice([2, 4], n),
                     "zlib_ratio": rng.normal(0.5, 0.1, n),
                     "exact_hash": rng.integers(0, 2**62, n, dtype=np.uint64)})


MANIFEST = {
    "siftkit_version": "0.1.0", "created": "2025-01-01T00:00:00Z", "seed": 3,
    "config": {"recipe": "longest", "budget": 10},
    "counts": {"read": 205, "rejected": 5, "rejected_by_reason": {"parse_error": 3, "no_assistant": 2},
               "defects": 1, "selected": 10},
    "steps": [{"step": "dedup", "name": "exact", "params": {"key": "exact_hash"}, "in": 200, "out": 190,
               "dropped": {"duplicate": 10}},
              {"step": "filter", "name": "filter", "params": {"expr": "turns > 0"}, "in": 190, "out": 183,
               "dropped": {"too_short": 7}},
              {"step": "select", "name": "top", "params": {"by": "tokens_response"}, "in": 183, "out": 10,
               "dropped": {"budget": 173}}],
    "timings": {"read": 0.5, "select": 0.01},
}


def page_data(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="siftkit-data">(.*?)</script>', page, re.DOTALL)
    assert m, "data block missing"
    return json.loads(m.group(1))


def render(tmp_path, pool, signals, sel, manifest=MANIFEST, extra=None, name="r.html") -> str:
    out = render_report(pool, signals, sel, manifest, str(tmp_path / name), extra)
    assert out == str(tmp_path / name)
    return (tmp_path / name).read_text(encoding="utf-8")


# ---------------------------------------------------------------- bins

def test_integer_small_range_gets_one_bin_per_value():
    v = np.array([2, 2, 4, 6, 6, 6], dtype=float)
    sel = np.array([True, False, False, True, True, False])
    h = D.histogram("turns", v, sel)
    assert not h["log"] and h["integer"]
    assert h["edges"] == [1.5, 2.5, 3.5, 4.5, 5.5, 6.5]
    assert h["pool"] == [2, 0, 1, 0, 3]
    assert h["sel"] == [1, 0, 0, 0, 2]
    assert h["stats_pool"]["median"] == 5.0 and h["stats_sel"]["median"] == 6.0


def test_length_bins_are_log_spaced_and_shared():
    rng = np.random.default_rng(0)
    v = np.round(10 ** rng.uniform(0, 5, 5000))
    sel = rng.random(5000) < 0.2
    h = D.histogram("tokens_response", v, sel)
    assert h["log"] and len(h["edges"]) == D.HIST_BINS + 1
    t = np.log10(1 + np.array(h["edges"]))
    assert np.allclose(np.diff(t), np.diff(t)[0], rtol=1e-4)          # uniform in log space
    assert h["edges"][0] == pytest.approx(v.min(), rel=1e-5) and h["edges"][-1] == pytest.approx(v.max(), rel=1e-5)
    assert sum(h["pool"]) == 5000 and sum(h["sel"]) == sel.sum()
    # independent brute-force count of one interior bin, from the (shared) edges
    lo, hi = h["edges"][10], h["edges"][11]
    assert h["pool"][10] == int(((v >= lo) & (v < hi)).sum())
    assert h["sel"][10] == int(((v[sel] >= lo) & (v[sel] < hi)).sum())


def test_missing_negative_and_constant_values():
    v = np.array([np.nan, -3.0, 0.5, 2.5, np.nan])
    sel = np.array([True, True, False, False, False])
    h = D.histogram("chars_total", v, sel)
    assert not h["log"]                      # negative values: log axis impossible, linear instead
    assert h["missing_pool"] == 2 and h["missing_sel"] == 1
    assert h["n_pool"] == 3 and sum(h["pool"]) == 3 and sum(h["sel"]) == 1
    c = D.histogram("x", np.full(4, 7.25), np.ones(4, bool))
    assert c["pool"] == [4] and c["edges"][0] < 7.25 < c["edges"][1]
    e = D.histogram("x", np.full(3, np.nan), np.zeros(3, bool))
    assert e["edges"] == [] and e["n_pool"] == 0 and e["stats_pool"] is None


def test_numeric_columns_skip_hashes_and_non_numeric():
    t = pa.table({"a": [1, 2], "b": [0.1, 0.2], "flag": [True, False], "exact_hash": pa.array([1, 2], pa.uint64()),
                  "label": ["x", "y"], "vec": [[1.0], [2.0]]})
    assert D.numeric_columns(t) == ["a", "b", "flag"]
    assert D.column_values(pa.table({"x": pa.array([1, None, 3])}), "x").tolist()[::2] == [1.0, 3.0]
    assert np.isnan(D.column_values(pa.table({"x": pa.array([1, None, 3])}), "x")[1])


def test_source_mix_caps_sources_into_other():
    names = [f"s{i:02d}" for i in range(30)]
    src = pa.array([names[i % 30] for i in range(300)] + ["s00"] * 10)
    sel = np.zeros(310, bool)
    sel[::7] = True
    mix = D.source_mix(src, sel, top=5)
    assert mix["sources"][0] == "s00" and mix["pool"][0] == 20
    assert mix["sources"][-1] == "other (26 sources)"
    assert sum(mix["pool"]) == 310 and sum(mix["sel"]) == sel.sum() == mix["n_sel"]


def test_scatter_is_capped_and_seeded():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=10_000), rng.normal(size=10_000)
    sel = rng.random(10_000) < 0.3
    a = D.scatter(x, y, sel, seed=4)
    assert len(a["pool"]["x"]) == D.SCATTER_CAP_POOL and len(a["sel"]["y"]) == D.SCATTER_CAP_SELECTED
    assert a["n_pool"] == 10_000 and a["n_sel"] == sel.sum()
    assert a == D.scatter(x, y, sel, seed=4)
    assert set(a["sel"]["x"]) <= {D._sig(v) for v in x[sel]}
    with pytest.raises(ValueError, match="same length"):
        D.scatter([1, 2], [1], [True, False])


# ---------------------------------------------------------------- page

def test_page_content_counts_and_data(tmp_path):
    n = 200
    pool, sig = make_pool(n), make_signals(n)
    sel = np.zeros(n, bool)
    sel[np.argsort(-sig.column("tokens_response").to_numpy(), kind="stable")[:10]] = True
    page = render(tmp_path, pool, sig, sel)
    d = page_data(page)
    assert [h["name"] for h in d["hists"]] == ["tokens_query", "tokens_response", "tokens_total",
                                               "chars_total", "turns", "zlib_ratio"]
    by_name = {h["name"]: h for h in d["hists"]}
    assert by_name["tokens_response"]["log"] and not by_name["zlib_ratio"]["log"]
    assert all(sum(h["pool"]) == n and sum(h["sel"]) == 10 for h in d["hists"])
    pool_src = Counter(pool.column("source").to_pylist())
    sel_src = Counter(np.asarray(pool.column("source").to_pylist())[sel].tolist())
    got = dict(zip(d["sources"]["sources"], zip(d["sources"]["pool"], d["sources"]["sel"])))
    assert got == {s: (pool_src[s], sel_src.get(s, 0)) for s in pool_src}
    # one plot container per histogram, the source mix, and the counts/steps tables
    assert len(re.findall(r'data-kind="hist"', page)) == 6 and page.count('data-kind="sources"') == 1
    assert "rejected: parse_error</td><td class=\"num\">3<" in page
    assert "duplicates: exact (duplicate)</td><td class=\"num\">10<" in page
    assert "filtered: filter (too_short)</td><td class=\"num\">7<" in page
    assert re.search(r'tile-selected.*?<span class="value">10</span>', page)
    assert "{&quot;key&quot;:&quot;exact_hash&quot;}" in page       # step params, escaped JSON
    sample = page[page.index('id="sample"'):].split("<section", 1)[0]
    assert sample.count("<tr>") == 11                                  # header + 10 selected records
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page


def test_render_is_deterministic(tmp_path):
    pool, sig = make_pool(300), make_signals(300)
    sel = np.random.default_rng(0).random(300) < 0.2
    assert render(tmp_path, pool, sig, sel, name="a.html") == render(tmp_path, pool, sig, sel, name="b.html")


def test_user_text_is_escaped_everywhere(tmp_path):
    pool = make_pool(6, sources=(HOSTILE, "ok"))
    msgs = pa.array([[{"role": "user", "content": HOSTILE}, {"role": "assistant", "content": HOSTILE}]] * 6,
                    MESSAGE_TYPE)
    pool = pool.set_column(pool.schema.get_field_index("messages"), "messages", msgs)
    manifest = {**MANIFEST, "config": {"recipe": HOSTILE},
                "steps": [{"step": "filter", "name": HOSTILE, "params": {"x": HOSTILE}, "in": 6, "out": 6,
                           "dropped": {HOSTILE: 1}}],
                "counts": {"rejected_by_reason": {HOSTILE: 1}, "by_source": {HOSTILE: {"read": 1}}},
                "inputs": [{"path": HOSTILE, "source": HOSTILE}], "timings": {HOSTILE: 1.0}}
    extra = [{"title": HOSTILE, "text": HOSTILE, "table": [{HOSTILE: HOSTILE}],
              "scatter": {"x": [1, 2], "y": [3, 4], "selected": [True, False], "title": HOSTILE,
                          "xlabel": HOSTILE}}]
    page = render(tmp_path, pool, pa.table({"turns": [2] * 6}), np.ones(6, bool), manifest, extra)
    assert page.count("<script") == 2            # the JSON data block and the plotting script only
    assert "<img" not in page and "</textarea>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    data_block = page.split('id="siftkit-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data_block and ">" not in data_block and "&" not in data_block
    d = page_data(page)                                                  # the data itself is intact
    assert HOSTILE in d["sources"]["sources"] and d["scatters"][0]["xlabel"] == HOSTILE


def test_empty_selection_and_no_signals(tmp_path):
    pool = make_pool(50)
    page = render(tmp_path, pool, make_signals(50), np.zeros(50, bool), manifest={})
    d = page_data(page)
    assert "No records selected" in page
    assert all(h["n_sel"] == 0 and sum(h["sel"]) == 0 and sum(h["pool"]) == 50 for h in d["hists"])
    assert sum(d["sources"]["sel"]) == 0 and sum(d["sources"]["pool"]) == 50
    page2 = render(tmp_path, pool, pa.table({}), np.ones(50, bool), manifest={}, name="b.html")
    assert "No signals computed" in page2 and page_data(page2)["hists"] == []
    assert "No pipeline steps recorded" in page2


def test_bad_inputs_are_named(tmp_path):
    pool, sig = make_pool(10), make_signals(10)
    with pytest.raises(ValueError, match="selected has 9 entries but the pool has 10"):
        render_report(pool, sig, np.zeros(9, bool), {}, str(tmp_path / "x.html"))
    with pytest.raises(ValueError, match="boolean mask"):
        render_report(pool, sig, np.arange(10), {}, str(tmp_path / "x.html"))
    with pytest.raises(ValueError, match="signals has 9 rows"):
        render_report(pool, sig.slice(0, 9), np.zeros(10, bool), {}, str(tmp_path / "x.html"))
    with pytest.raises(TypeError, match=r"extra_sections\[0\]"):
        render_report(pool, sig, np.zeros(10, bool), {}, str(tmp_path / "x.html"), ["oops"])
    assert not (tmp_path / "x.html").exists()


def _big_pool(n: int) -> pa.Table:
    roles = pa.array(np.tile(np.array(["user", "assistant"], dtype=object), n))
    contents = pa.array(np.tile(np.array(["q", "a"], dtype=object), n))
    msgs = pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)),
                                    pa.StructArray.from_arrays([roles, contents], ["role", "content"]))
    src = pa.DictionaryArray.from_arrays(pa.array(np.arange(n, dtype=np.int32) % 7),
                                         pa.array([f"src{i}" for i in range(7)])).cast(pa.string())
    ids = pa.array(np.char.mod("%016x", np.arange(n)).astype(object))
    return canonical_table({"id": ids, "source": src, "file": pa.array(np.full(n, "f", dtype=object)),
                            "row": pa.array(np.arange(n)), "line": pa.array(np.arange(n)),
                            "messages": msgs.cast(MESSAGE_TYPE), "original": pa.array(np.full(n, "{}", dtype=object))})


def test_one_million_rows_give_a_small_page(tmp_path):
    n = 1_000_000
    pool, sig = _big_pool(n), make_signals(n)
    sel = np.random.default_rng(0).random(n) < 0.05
    t0 = time.perf_counter()
    page = render(tmp_path, pool, sig, sel)
    seconds = time.perf_counter() - t0
    assert len(page.encode()) < 200_000, f"page is {len(page.encode())} bytes"
    d = page_data(page)
    assert all(sum(h["pool"]) == n and sum(h["sel"]) == sel.sum() for h in d["hists"])
    assert sum(d["sources"]["pool"]) == n
    # a sanity ceiling only (shared CI machines); measured figures belong in benchmarks
    assert seconds < 30, f"rendering 1M rows took {seconds:.1f}s"


def test_manifest_counts_win_and_steps_without_reasons_count_in_minus_out(tmp_path):
    manifest = {"counts": {"records": 100, "rejected": 2, "duplicates": 4, "filtered": 6, "selected": 10},
                "steps": [{"step": "filter", "name": "filter", "in": 100, "out": 94,
                           "dropped": {"filter: turns > 1": 6}},
                          {"step": "select", "name": "stratified", "in": 90, "out": 10, "dropped": {}}]}
    pool, sig = make_pool(100), make_signals(100)
    sel = np.zeros(100, bool)
    sel[:10] = True
    page = render(tmp_path, pool, sig, sel, manifest)
    # read = the pool's records (as in the per-source table); the 2 rejected come on top, not inside it
    assert re.search(r'tile-read.*?<span class="value">100</span>', page)
    assert re.search(r'tile-duplicates.*?<span class="value">4</span>', page)
    assert "filtered: filter: turns &gt; 1</td><td class=\"num\">6<" in page
    assert "not chosen: stratified</td><td class=\"num\">80<" in page


# ---------------------------------------------------------------- issue 10: one source of truth, captions, header, sample

def _tile(page: str, key: str) -> str:
    return re.search(rf'tile-{key}".*?<span class="value">([\d,]+)</span>', page).group(1).replace(",", "")


def test_cards_and_tables_use_the_manifest_counts(tmp_path):
    """An end-to-end run with rejects: the READ card, the counts table, the per-source table and the source
    mix caption all show the pool's record count (manifest counts.records); rejects are counted beside it."""
    from conftest import convo, write_jsonl
    from siftkit.cli import main

    rows = [convo(f"question {i} " + "w " * (i % 7), f"answer {i} " + "t " * (i % 11)) for i in range(40)]
    write_jsonl(tmp_path / "pool" / "a" / "x.jsonl", rows + [{"messages": []}, {"messages": [{"role": "user"}]}])
    write_jsonl(tmp_path / "pool" / "b" / "y.jsonl", rows[:12])
    out = tmp_path / "out"
    assert main(["-q", "select", str(tmp_path / "pool"), "--on-error", "skip", "--budget", "10", "--method", "top",
                 "--by", "tokens_response", "--dedup", "first", "--out", str(out),
                 "--cache-dir", str(tmp_path / "c"), "--report"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    c = m["counts"]
    assert c["records"] == 52 and c["rejected"] == 2
    page = (out / "report.html").read_text(encoding="utf-8")
    assert _tile(page, "read") == "52" and _tile(page, "rejected") == "2" and _tile(page, "selected") == "10"
    assert _tile(page, "duplicates") == str(c["duplicates"])
    assert '<td>read</td><td class="num">52<' in page
    per_src = page[page.index("counts by-source"):].split("</table>", 1)[0]
    reads = [int(v.replace(",", "")) for v in re.findall(r'<tr><td>[ab]</td><td class="num">([\d,]+)<', per_src)]
    assert sum(reads) == 52
    assert "read 52 records · selected 10 records" in page
    assert sum(page_data(page)["sources"]["pool"]) == 52


def test_pca_caption_counts_records_not_points(tmp_path):
    """A pool sample and a selection sample passed as one list: the caption says k of N pool records."""
    n_pool, n_sel = 3045, 200
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=n_pool + n_sel).tolist(), rng.normal(size=n_pool + n_sel).tolist()
    extra = [{"title": "Pool vs selection, 2-D PCA map",
              "scatter": {"x": x, "y": y, "selected": [False] * n_pool + [True] * n_sel,
                          "in_pool": [True] * n_pool + [False] * n_sel, "n_pool": n_pool, "n_sel": n_sel}}]
    pool, sig = make_pool(n_pool), make_signals(n_pool)
    sel = np.zeros(n_pool, bool)
    sel[:n_sel] = True
    page = render(tmp_path, pool, sig, sel, extra=extra)
    assert "3,000 of 3,045 pool records and 200 of 200 selected records shown" in page
    sc = page_data(page)["scatters"][0]
    assert len(sc["pool"]["x"]) == 3000 and len(sc["sel"]["x"]) == 200
    assert set(sc["pool"]["x"]).isdisjoint(set(sc["sel"]["x"]))     # selected points are not drawn as pool


def test_header_is_a_readable_summary_without_json_or_absolute_paths(tmp_path):
    manifest = {**MANIFEST, "budget_resolved": 10, "config": {
        "inputs": [{"path": "/home/someone/data/pool/"}, {"path": "rel/dir"}], "seed": 3,
        "cache_dir": "/home/someone/.siftkit", "budget": 10, "tokenizer": "/models/qwen/tokenizer.json",
        "output": {"dir": "/home/someone/out", "format": "messages", "report": True, "diversity": False},
        "steps": [{"dedup": "exact"}, {"filter": "tokens_response >= 10"},
                  {"select": "kmeans", "k": 1000, "by": "tokens_total"}],
        "signals": [{"name": "lm_loss", "model": "/models/qwen"}]}}
    pool, sig = make_pool(20), make_signals(20)
    page = render(tmp_path, pool, sig, np.ones(20, bool), manifest)
    header = page[page.index("<header>"):page.index("</header>")]
    assert "/home/someone" not in page and "/models/" not in page       # nowhere, not even the full config
    assert "{" not in header and "&quot;" not in header and "[" not in header
    assert "<dt>inputs</dt><dd>pool/, rel/dir</dd>" in header
    assert ("<dt>pipeline</dt><dd>dedup exact → filter tokens_response &gt;= 10 → "
            "select kmeans (k 1000, by tokens_total)</dd>") in header
    assert "<dt>output</dt><dd>dir out, format messages, report yes</dd>" in header
    assert "<dt>cache_dir</dt><dd>.siftkit</dd>" in header and "<dt>tokenizer</dt><dd>tokenizer.json</dd>" in header
    assert "<dt>signals</dt><dd>lm_loss (model qwen)</dd>" in header
    full = page[page.index("full configuration"):].split("</pre>", 1)[0]
    assert "cache_dir: .siftkit" in full and "k: 1000" in full


def test_sample_keeps_line_breaks_and_labels_every_turn(tmp_path):
    code = "def add(a, b):\n    return a + b\n\n\n\nprint(add(1, 2))"
    msgs = [[{"role": "system", "content": "You write Python."}, {"role": "user", "content": "Write add."},
             {"role": "assistant", "content": "Sure:"}, {"role": "user", "content": "Now as code only."},
             {"role": "assistant", "content": code}]] * 3
    pool = make_pool(3)
    pool = pool.set_column(pool.schema.get_field_index("messages"), "messages", pa.array(msgs, MESSAGE_TYPE))
    page = render(tmp_path, pool, pa.table({"turns": [5] * 3}), np.ones(3, bool))
    sample = page[page.index('id="sample"'):].split("</section>", 1)[0]
    row = sample[sample.index("<tbody><tr>"):].split("</tr>", 1)[0]
    roles = re.findall(r'<span class="role">(\w+)</span>', row)
    assert roles == ["system", "user", "assistant", "user", "assistant"]     # earlier turns labelled too
    assert "def add(a, b):\n    return a + b\n\nprint(add(1, 2))" in row      # breaks and indent kept
    assert "white-space: pre-wrap" in page
    long = [[{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(12)]]
    pool2 = make_pool(1).set_column(make_pool(1).schema.get_field_index("messages"), "messages", pa.array(long, MESSAGE_TYPE))
    rows = D.sample_selected(pool2, np.ones(1, bool))
    q = rows[0]["query"]
    assert [t["role"] for t in q] == ["user", "assistant", "…", "assistant", "user", "assistant", "user"]
    assert q[2]["text"] == "5 more turns" and rows[0]["response"] == [{"role": "assistant", "text": "turn 11"}]


def test_special_tokens_per_source_section(tmp_path):
    pool = make_pool(6, sources=("t0", "alpaca"))
    src = pool.column("source").to_pylist()
    n_t0 = src.count("t0")
    sig = pa.table({"special_tokens": [1 if s == "t0" else 0 for s in src],
                    "special_token_kinds": ["<|endoftext|>" if s == "t0" else "" for s in src]})
    page = render(tmp_path, pool, sig, np.ones(6, bool))
    sec = page[page.index('id="special-tokens"'):].split("</section>", 1)[0]
    assert f"<tr><td>t0</td><td class=\"num\">{n_t0}</td><td class=\"num\">{n_t0}</td>" in sec
    assert "&lt;|endoftext|&gt; (" in sec and "<td>alpaca</td>" not in sec
    assert f"{n_t0} of 6 records" in sec
    clean = render(tmp_path, pool, pa.table({"special_tokens": [0] * 6}), np.ones(6, bool), name="c.html")
    assert "No literal special tokens found" in clean


def test_special_token_counts_are_not_a_length():
    assert not D.is_length_signal("special_tokens") and D.is_length_signal("tokens_total")
