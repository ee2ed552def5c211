"""The HTML report in a real headless browser: every plot is drawn as SVG with the expected bars/points.

Needs Debian's ``chromium`` (``apt-get install chromium``) or ``SIFTKIT_CHROMIUM=/path/to/chrome``;
skipped otherwise. The DOM is read back with ``--dump-dom`` after the page's script has run, so a JS
error, a missing plot or a wrong bar count fails the test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pytest

from siftkit.io import read_pool
from siftkit.report import render_report
from siftkit.signals.segments import flatten

pytestmark = pytest.mark.browser

XSS = "<img src=x onerror=\"document.body.setAttribute('data-xss','1')\"><script>document.title='pwned'</script>"


def chromium() -> str:
    exe = os.environ.get("SIFTKIT_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"))
         if p), None)
    if not exe:
        pytest.skip("chromium not found: install it (Debian: apt-get install chromium) or set SIFTKIT_CHROMIUM")
    return exe


def run_chromium(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={tmp / 'chromium-profile'}", *args, page.resolve().as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, f"chromium failed ({res.returncode}): {res.stderr[-2000:]}"
    return res


class PlotCollector(HTMLParser):
    """Collects each plot container's attributes and the SVG elements drawn inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.plots: list[dict] = []
        self.body: dict[str, str | None] = {}
        self.title = ""
        self._cur: dict | None = None
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        elif tag == "title" and self._cur is None:
            self._in_title = True
        elif tag == "div" and "data-kind" in a:
            self._cur = {"attrs": a, "bars": [], "points": 0, "texts": 0, "svg": 0}
            self.plots.append(self._cur)
        elif self._cur is not None:
            cls = (a.get("class") or "").split()
            if tag == "svg":
                self._cur["svg"] += 1
            elif tag == "rect" and "bar" in cls:
                self._cur["bars"].append(a)
            elif tag == "circle" and "pt" in cls:
                self._cur["points"] += 1
            elif tag == "text":
                self._cur["texts"] += 1

    def handle_endtag(self, tag):
        if tag == "div":
            self._cur = None  # plot containers hold only an <svg>, never a nested <div>
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def write_inputs(root: Path) -> None:
    rng = np.random.default_rng(5)
    for src, n in (("alpaca", 60), ("sharegpt", 30), ("gsm8k", 20)):
        lines = []
        for i in range(n):
            q = " ".join(["word"] * int(rng.integers(1, 80)))
            a = " ".join(["tok"] * int(rng.integers(1, 400)))
            if i == 3:
                q, a = XSS, XSS + " tok" * 500   # the longest response: always selected
            msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            if i % 5 == 0:
                msgs += [{"role": "user", "content": "more?"}, {"role": "assistant", "content": "yes " + a}]
            lines.append(orjson.dumps({"messages": msgs}).decode())
        (root / f"{src}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def build_report(tmp: Path, budget: int = 20) -> tuple[Path, dict, np.ndarray]:
    data = tmp / "data"
    data.mkdir()
    write_inputs(data)
    pool = read_pool(sorted(str(f) for f in data.glob("*.jsonl"))).table
    assert sorted(set(pool.column("source").to_pylist())) == ["alpaca", "gsm8k", "sharegpt"]
    flat = flatten(pool)
    lens = np.array([len(c) for c in flat.contents])
    signals = pa.table({
        "chars_query": flat.per_record_sum(lens, "query"),
        "chars_response": flat.per_record_sum(lens, "response"),
        "chars_total": flat.per_record_sum(lens, "conversation"),
        "turns": np.diff(flat.offsets),
        "score": np.random.default_rng(0).normal(size=pool.num_rows),
    })
    resp = signals.column("chars_response").to_numpy()
    sel = np.zeros(pool.num_rows, bool)
    sel[np.argsort(-resp, kind="stable")[:budget]] = True  # <= the sample size, so every selected record is shown
    xy = np.random.default_rng(1).normal(size=(pool.num_rows, 2))
    manifest = {"siftkit_version": "0.1.0", "seed": 1, "config": {"recipe": "longest", "budget": budget},
                "counts": {"read": pool.num_rows, "rejected": 0, "selected": budget},
                "steps": [{"step": "select", "name": "top", "params": {"by": "chars_response"},
                           "in": pool.num_rows, "out": budget, "dropped": {"budget": pool.num_rows - budget}}]}
    extra = [{"title": "Diversity", "scatter": {"x": xy[:, 0], "y": xy[:, 1], "selected": sel}}]
    page = Path(render_report(pool, signals, sel, manifest, str(tmp / "report.html"), extra))
    m = re.search(r'id="siftkit-data">(.*?)</script>', page.read_text(encoding="utf-8"), re.DOTALL)
    return page, json.loads(m.group(1)), sel


@pytest.mark.parametrize("budget", [20, 0])
def test_plots_render_in_headless_chromium(tmp_path, budget):
    chromium()
    page, data, sel = build_report(tmp_path, budget)
    dom = run_chromium(page, tmp_path, "--dump-dom").stdout
    p = PlotCollector()
    p.feed(dom)
    assert p.body.get("data-report-ready") == "1", "the plotting script did not finish"
    assert "data-js-error" not in p.body, p.body.get("data-js-error")
    assert "data-xss" not in p.body and "pwned" not in p.title
    kinds = [pl["attrs"]["data-kind"] for pl in p.plots]
    assert kinds.count("hist") == 5 and kinds.count("sources") == 1 and kinds.count("scatter") == 1
    for pl in p.plots:
        a, kind, key = pl["attrs"], pl["attrs"]["data-kind"], int(pl["attrs"]["data-key"])
        assert "data-error" not in a, a.get("data-error")
        assert a.get("data-rendered") == "1" and pl["svg"] == 1, a
        assert pl["texts"] >= 4, f"{kind} {key}: axis ticks / legend missing"
        if kind == "hist":
            h = data["hists"][key]
            expected = sum(1 for c in h["pool"] + h["sel"] if c)
            assert len(pl["bars"]) == int(a["data-bars"]) == expected > 0, h["name"]
            assert all(float(b["height"]) > 0 and float(b["width"]) > 0 for b in pl["bars"])
            # the tallest bar reaches at least half the plot height: the y scale fits the data
            assert max(float(b["height"]) for b in pl["bars"]) > 90
        elif kind == "sources":
            assert len(pl["bars"]) == int(a["data-bars"]) == (6 if budget else 3)  # 3 sources x (pool, selected)
            assert {b["class"] for b in pl["bars"]} == ({"bar pool", "bar sel"} if budget else {"bar pool"})
        else:
            sc = data["scatters"][key]
            assert pl["points"] == int(a["data-points"]) == len(sc["pool"]["x"]) + len(sc["sel"]["x"])
            assert len(sc["sel"]["x"]) == sel.sum() == budget
    names = {data["hists"][int(pl["attrs"]["data-key"])]["name"] for pl in p.plots if pl["attrs"]["data-kind"] == "hist"}
    assert names == {"chars_query", "chars_response", "chars_total", "turns", "score"}
    sample = dom[dom.index('id="sample"'):]
    assert sample.count("&lt;img src=x onerror") == (6 if budget else 0)  # 3 records x (query, response)


def test_screenshot_is_written(tmp_path):
    chromium()
    page, _, _ = build_report(tmp_path)
    png = tmp_path / "report.png"
    run_chromium(page, tmp_path, f"--screenshot={png}", "--window-size=1280,2400")
    raw = png.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", raw[16:24])
    assert (width, height) == (1280, 2400)
    assert len(raw) > 50_000          # a blank page compresses to a few KB; plots and tables do not
