"""``bench_report.html`` and ``results.md``: the results table, the U-test p-values and one plot per task;
for test-set tasks, a table per evolution kind (kind x method: items, runs, token F1 and judge rating with
their U tests vs random).

Same look as the selection report (its CSS and table helpers); plots are inline SVG drawn here (one dot per
run; random runs grey with their mean, each method in blue; the base model as a dashed line), so the page
needs no script and every number is in the markup.
"""

from __future__ import annotations

import math
from typing import Any

from ..report.html import _asset, esc, table

P_NOTE = ("p: one-sided Mann-Whitney U test of the method's runs against the random runs (is the method better?). "
          "With m method runs and n random runs the smallest attainable p is 1/C(m+n, m): with one method run and "
          "n random runs it is 1/(n+1) (0.167 for n = 5), so a single run can never reach p < 0.05; p = 1/(n+1) "
          "means only 'better than every random run'. min p is shown beside each p.")


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}"


def _cell(summary: dict[str, Any]) -> str:
    if summary.get("mean") is None:
        return "–"
    s = _fmt(summary["mean"])
    if summary.get("std") is not None:
        s += f" ± {_fmt(summary['std'])}"
    return s


def _rows(res: dict[str, Any], base: dict[str, float] | None, method_seeds: dict[str, list[int]]) -> list[list]:
    cols = res["columns"]
    rows = []
    for m, row in res["methods"].items():
        n = row[cols[0]]["n"] if cols else 0
        rows.append([m, n] + [_cell(row[c]) for c in cols])
    if base:
        avg = [base[t] for t in res.get("average_of", [])]
        b = dict(base, average=sum(avg) / len(avg) if avg else None)
        rows.append(["base (not fine-tuned)", 1] + [_fmt(b.get(c)) for c in cols])
    return rows


def _p_rows(res: dict[str, Any]) -> list[list]:
    cols = res["columns"]
    rows = []
    for m, row in res["methods"].items():
        if m == "random" or "test" not in row.get(cols[0], {}):
            continue
        out: list[Any] = [m]
        for c in cols:
            t = row[c]["test"]
            out.append("–" if t["p"] is None else f"{t['p']:.3f} (min {t['min_p']:.3f}, {t['alternative']})")
        rows.append(out)
    return rows


def _p(summary: dict[str, Any]) -> str:
    t = summary.get("test")
    if not t or t["p"] is None:
        return "–"
    return f"{t['p']:.3f} (min {t['min_p']:.3f})"


def kind_header(res: dict[str, Any]) -> list[str]:
    any_kind = next(iter(res.values()))
    cols = [c for c in ("f1", "judge") if c in any_kind["columns"]]
    out = ["kind", "method", "items", "runs"]
    for c in cols:
        name = "token F1" if c == "f1" else "judge (0-1)"
        out += [name, f"p {name} vs random"]
    return out


def kind_rows(res: dict[str, Any]) -> list[list[Any]]:
    """One row per (kind, method) of one test-set task's per-kind results."""
    rows = []
    for kind, kr in res.items():
        cols = [c for c in ("f1", "judge") if c in kr["columns"]]
        for m, row in kr["methods"].items():
            r: list[Any] = [kind, m, kr["n_items"], row[cols[0]]["n"]]
            for c in cols:
                r += [_cell(row[c]), "–" if m == "random" else
                      (_p(row[c]) if "test_skipped" not in kr else f"– ({kr['test_skipped']})")]
            rows.append(r)
    return rows


def results_markdown(results: dict[str, Any]) -> str:
    lines = [f"# siftkit bench: {results.get('base_model')}", ""]
    for b, res in results["budgets"].items():
        cols = res["columns"]
        lines += [f"## budget {b}", "", "| method | runs | " + " | ".join(cols) + " |",
                  "|---|---:|" + "---:|" * len(cols)]
        for r in _rows(res, results.get("base"), results.get("method_seeds", {})):
            lines.append("| " + " | ".join(str(x) for x in r) + " |")
        prow = _p_rows(res)
        if prow:
            lines += ["", "| p vs random | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(str(x) for x in r) + " |" for r in prow]
        for task, kres in (res.get("by_kind") or {}).items():
            head = kind_header(kres)
            lines += ["", f"### {task}: per evolution kind", "", "| " + " | ".join(head) + " |",
                      "|---|---|" + "---:|" * (len(head) - 2)]
            lines += ["| " + " | ".join(str(x) for x in r) + " |" for r in kind_rows(kres)]
        lines.append("")
    lines += [P_NOTE, ""]
    return "\n".join(lines)


def strip_plot(task: str, res: dict[str, Any], base: float | None, higher: bool) -> str:
    """One column per method, one dot per run; random's mean as a grey bar; base as a dashed line."""
    methods = list(res["methods"])
    vals = {m: [v for v in res["methods"][m][task]["values"] if v is not None and math.isfinite(v)]
            for m in methods}
    allv = [v for vs in vals.values() for v in vs] + ([base] if base is not None else [])
    if not allv:
        return '<p class="empty">no finished runs</p>'
    lo, hi = min(allv), max(allv)
    pad = (hi - lo) * 0.1 or max(abs(hi) * 0.05, 0.01)
    lo, hi = lo - pad, hi + pad
    w, h, left, top, bottom = max(320, 90 * len(methods) + 70), 220, 60, 12, 40
    ph = h - top - bottom

    def y(v: float) -> float:
        return top + ph * (1 - (v - lo) / (hi - lo))

    parts = [f'<svg width="{w}" height="{h}" role="img" aria-label="{esc(task)}">',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#94a3b8"/>']
    for v in (lo + pad, (lo + hi) / 2, hi - pad):
        parts.append(f'<text class="tick" x="{left - 6}" y="{y(v) + 3:.1f}" text-anchor="end">{v:.3g}</text>')
    if base is not None:
        parts.append(f'<line class="base" x1="{left}" x2="{w - 8}" y1="{y(base):.1f}" y2="{y(base):.1f}" '
                     f'stroke="#64748b" stroke-dasharray="4 3"><title>base model {base:.4f}</title></line>')
    step = (w - left - 10) / max(len(methods), 1)
    n_points = 0
    for i, m in enumerate(methods):
        cx = left + step * (i + 0.5)
        color = "#94a3b8" if m == "random" else "#2563eb"
        if m == "random" and vals[m]:
            mean = sum(vals[m]) / len(vals[m])
            parts.append(f'<line class="mean" x1="{cx - 18:.1f}" x2="{cx + 18:.1f}" y1="{y(mean):.1f}" '
                         f'y2="{y(mean):.1f}" stroke="#475569" stroke-width="2"><title>random mean '
                         f'{mean:.4f}</title></line>')
        for j, v in enumerate(vals[m]):
            dx = (j - (len(vals[m]) - 1) / 2) * 5
            parts.append(f'<circle class="pt" cx="{cx + dx:.1f}" cy="{y(v):.1f}" r="4" fill="{color}" '
                         f'fill-opacity="0.8"><title>{esc(m)}: {v:.4f}</title></circle>')
            n_points += 1
        parts.append(f'<text class="tick" x="{cx:.1f}" y="{h - bottom + 16}" text-anchor="middle">{esc(m)}</text>')
    arrow = "higher is better" if higher else "lower is better"
    parts.append(f'<text class="axis-label" x="{left}" y="{h - 6}">{esc(task)} ({arrow})</text></svg>')
    return f'<div class="plot" data-points="{n_points}">' + "".join(parts) + "</div>"


def render_bench_report(results: dict[str, Any], path: str) -> str:
    css = _asset("report.css")
    body = [(f'<header><h1>siftkit bench report</h1><div class="meta"><span><b>base model</b> '
             f'{esc(results.get("base_model"))}</span><span><b>random seeds</b> '
             f'{esc(results.get("random_seeds"))}</span></div>')]
    tr = results.get("train") or {}
    body.append('<dl class="config">' + "".join(f"<dt>train.{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in tr.items())
                + "".join(f"<dt>eval.{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in (results.get("eval") or {}).items())
                + "</dl></header>")
    if not results["budgets"]:
        body.append('<p class="empty">no finished cells yet</p>')
    for b, res in results["budgets"].items():
        cols = res["columns"]
        body.append(f'<section id="budget-{esc(b)}"><h2>budget {esc(b)}: scores (mean ± std over runs)</h2>')
        body.append(table(["method", "runs"] + cols, _rows(res, results.get("base"), results.get("method_seeds", {})),
                          "results"))
        avg = res.get("average_of") or []
        if avg:
            body.append(f'<p class="note">average = mean of {esc(", ".join(avg))} per run (losses are left out).</p>')
        prow = _p_rows(res)
        if prow:
            body.append("<h2>p-values vs random</h2>" + table(["method"] + cols, prow, "pvalues"))
        body.append(f'<p class="note">{esc(P_NOTE)}</p><div class="grid">')
        for t in cols:
            hib = results["higher_is_better"].get(t, True) if t != "average" else True
            bval = (results.get("base") or {}).get(t)
            if t == "average" and results.get("base") and avg:
                bval = sum(results["base"][x] for x in avg) / len(avg)
            body.append(f'<figure class="card"><figcaption>{esc(t)}</figcaption>'
                        f'{strip_plot(t, res, bval, hib)}</figure>')
        body.append("</div>")
        for task, kres in (res.get("by_kind") or {}).items():
            body.append(f"<h2>{esc(task)}: per evolution kind (mean ± std over runs of the per-run mean)</h2>"
                        + table(kind_header(kres), kind_rows(kres), "kinds"))
        cells = res.get("cells", {})
        rows = [[m, s, c["path"], _fmt(c["info"].get("train_loss")), c["info"].get("selected", "–")]
                for m, seeds in cells.items() for s, c in seeds.items()]
        body.append("<h2>runs</h2>" + table(["method", "seed", "folder (selection, train log, raw outputs)",
                                             "train loss", "selected"], rows, "runs") + "</section>")
    html = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>siftkit bench</title>'
            f"<style>{css}</style></head><body><main>{''.join(body)}</main></body></html>")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(html)
    import os

    os.replace(tmp, path)
    return path
