"""``render_report``: one self-contained HTML page (inline CSS, JS and JSON data; no network).

Tables are rendered here with every user string escaped; plots are drawn in the browser as inline SVG
by ``report.js`` from the aggregated data embedded as JSON (``<script type="application/json">``, with
``<``, ``>`` and ``&`` escaped so no record text can close the script element). Each plot container
gets ``data-rendered="1"`` and ``data-bars`` / ``data-points`` once drawn.
"""

from __future__ import annotations

import base64
import hashlib
import html as _html
import os
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from . import data as D

STEP_LABELS = {"dedup": "duplicates", "filter": "filtered", "select": "not chosen"}


def esc(value: Any) -> str:
    return _html.escape("" if value is None else str(value), quote=True)


def fmt_num(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return esc(v)
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return esc(v)


def compact_json(v: Any, limit: int = 160) -> str:
    s = orjson.dumps(v, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str).decode()
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _asset(name: str) -> str:
    return resources.files("siftkit.report").joinpath(name).read_text(encoding="utf-8")


def _json_for_script(obj: Any) -> str:
    raw = orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS).decode()
    return raw.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    """An HTML table; numbers are right-aligned and formatted, everything else escaped."""
    rows = [list(r) for r in rows]

    def is_num(v: Any) -> bool:
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

    numeric = [bool(rows) and all(is_num(r[j]) or r[j] in ("–", None) for r in rows if j < len(r))
               for j in range(len(header))]
    head = "".join(f'<th class="num">{esc(h)}</th>' if numeric[j] else f"<th>{esc(h)}</th>"
                   for j, h in enumerate(header))
    body = []
    for r in rows:
        cells = []
        for v in r:
            if is_num(v):
                cells.append(f'<td class="num">{fmt_num(v)}</td>')
            else:
                cells.append(f"<td>{esc(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _section(title: str, body: str, sid: str, note: str = "") -> str:
    note_html = f'<p class="note">{esc(note)}</p>' if note else ""
    return f'<section id="{esc(sid)}"><h2>{esc(title)}</h2>{note_html}{body}</section>'


# ---------------------------------------------------------------- header, counts, steps

STEP_ROLES = ("filter", "dedup", "select", "step")


def short_path(value: str) -> str:
    """An absolute path as its last component (``/home/me/data/pool/`` -> ``pool/``); others unchanged.
    The report can be shared: the manifest keeps the full paths."""
    if not isinstance(value, str) or not os.path.isabs(value):
        return value
    trail = "/" if value.endswith(("/", os.sep)) and len(value) > 1 else ""
    return (os.path.basename(value.rstrip("/" + os.sep)) or value) + trail


def short_paths(value: Any) -> Any:
    """``value`` with every absolute path string shortened by ``short_path`` (dicts and lists walked)."""
    if isinstance(value, str):
        return short_path(value)
    if isinstance(value, dict):
        return {k: short_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [short_paths(v) for v in value]
    return value


def readable(value: Any, limit: int = 200) -> str:
    """A config value as plain text: ``k v, k2 v2`` for mappings, ``a, b`` for lists, paths shortened."""
    def go(v: Any) -> str:
        if isinstance(v, dict):
            return ", ".join(f"{k} {go(x)}" if not isinstance(x, dict) else f"{k} ({go(x)})" for k, x in v.items())
        if isinstance(v, (list, tuple)):
            return ", ".join(f"({go(x)})" if isinstance(x, dict) and len(x) > 1 else go(x) for x in v)
        if isinstance(v, bool):
            return "yes" if v else "no"
        if v is None:
            return "–"
        return str(short_path(v) if isinstance(v, str) else v)
    s = go(value)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _step_text(step: Any) -> str:
    """``{"select": "kmeans", "k": 1000}`` -> ``select kmeans (k 1000)``."""
    if isinstance(step, str):
        return f"select {step}"
    if not isinstance(step, dict):
        return readable(step)
    role = next((k for k in STEP_ROLES if k in step), None)
    if role is None:
        return readable(step)
    head, params = step[role], {k: v for k, v in step.items() if k != role}
    if isinstance(head, dict):
        params = {**head, **params}
        head = params.pop("name", None) or params.pop("method", None) or params.pop("expr", "")
    return f"{role} {short_path(str(head))}" + (f" ({readable(params)})" if params else "")


def _config_summary(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    cfg = manifest.get("config") or {}
    if not isinstance(cfg, dict):
        return [("config", readable(cfg))]
    out: list[tuple[str, str]] = []
    for k, v in cfg.items():
        if k == "inputs" and isinstance(v, list):
            names = [short_path(i.get("path", "?")) if isinstance(i, dict) else short_path(str(i)) for i in v]
            shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
            out.append(("inputs", shown or "–"))
        elif k == "steps" and isinstance(v, list):
            out.append(("pipeline", " → ".join(_step_text(s) for s in v) or "–"))
        elif k == "budget":
            res = manifest.get("budget_resolved")
            out.append(("budget", readable(v) + (f" ({res:,} records)" if isinstance(res, int) and
                                                 str(res) != str(v) else "")))
        elif k == "signals" and isinstance(v, list):
            if v:
                out.append(("signals", "; ".join(_step_text({"select": s}).removeprefix("select ")
                                                 if isinstance(s, dict) and "name" in s
                                                 else readable(s) for s in v)))
        elif k == "output" and isinstance(v, dict):
            out.append(("output", readable({kk: vv for kk, vv in v.items() if vv not in (False, None)})))
        else:
            out.append((str(k), readable(v)))
    return out


def _header(manifest: dict[str, Any]) -> str:
    meta = []
    for key, label in (("siftkit_version", "siftkit"), ("created", "created"), ("seed", "seed")):
        if key in manifest:
            meta.append(f"<span><b>{esc(label)}</b> {esc(manifest[key])}</span>")
    summary = [f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in _config_summary(manifest)]
    cfg_html = f'<dl class="config">{"".join(summary)}</dl>' if summary else ""
    return (f'<header><h1>siftkit selection report</h1><div class="meta">{"".join(meta)}</div>'
            f"{cfg_html}</header>")


def _step_drops(step: dict[str, Any]) -> dict[str, int]:
    """What a step dropped, by reason; ``in - out`` when the step gave no reasons."""
    dropped = {str(k): int(v) for k, v in (step.get("dropped") or {}).items() if v}
    n_in, n_out = step.get("in"), step.get("out")
    if not dropped and isinstance(n_in, int) and isinstance(n_out, int) and n_in > n_out:
        dropped = {"": n_in - n_out}
    return dropped


def _totals(manifest: dict[str, Any], n_pool: int, n_sel: int) -> dict[str, int]:
    counts = manifest.get("counts") or {}
    by_role: dict[str, int] = {"dedup": 0, "filter": 0, "select": 0}
    for s in manifest.get("steps") or []:
        if s.get("step") in by_role:
            by_role[s["step"]] += sum(_step_drops(s).values())
    rejected = int(counts.get("rejected", 0))
    # "read" is the records in the pool (manifest counts.records, the same number as the per-source "read"
    # column and the source mix); rejected records come on top of it, they never reached the pool.
    read = counts.get("records", counts.get("read", n_pool))
    return {"read": int(read), "rejected": rejected,
            "duplicates": int(counts.get("duplicates", by_role["dedup"])),
            "filtered": int(counts.get("filtered", by_role["filter"])),
            "selected": int(counts.get("selected", n_sel))}


def _tiles(tot: dict[str, int]) -> str:
    read = max(tot["read"], 1)
    tiles = []
    for key in ("read", "rejected", "duplicates", "filtered", "selected"):
        if key == "read":
            pct = ""
        elif key == "rejected":
            seen = max(tot["read"] + tot["rejected"], 1)
            pct = f'<span class="pct">{100.0 * tot[key] / seen:.1f}% of input, not in read</span>'
        else:
            pct = f'<span class="pct">{100.0 * tot[key] / read:.1f}% of read</span>'
        tiles.append(f'<div class="tile tile-{esc(key)}"><span class="label">{esc(key)}</span>'
                     f'<span class="value">{tot[key]:,}</span>{pct}</div>')
    return f'<div class="tiles">{"".join(tiles)}</div>'


def _counts(manifest: dict[str, Any], tot: dict[str, int], computed: dict[str, dict[str, int]]) -> str:
    counts = manifest.get("counts") or {}
    rows: list[list[Any]] = [["read", tot["read"]], ["rejected", tot["rejected"]]]
    for reason, n in sorted((counts.get("rejected_by_reason") or {}).items()):
        rows.append([f"\u2003rejected: {reason}", int(n)])
    if "defects" in counts:
        rows.append(["file defects (no record lost)", int(counts["defects"])])
    for s in manifest.get("steps") or []:
        label = STEP_LABELS.get(s.get("step"), s.get("step", "step"))
        name = str(s.get("name", ""))
        for reason, n in sorted(_step_drops(s).items()):
            what = reason if reason.startswith(name) else f"{name} ({reason})" if reason else name
            rows.append([f"{label}: {what}", n])
    rows.append(["selected", tot["selected"]])
    overall = table(["count", "records"], rows, "counts")
    by_source = counts.get("by_source") or {}
    sources = sorted(set(by_source) | set(computed))
    keys = ["read", "rejected", "duplicates", "filtered", "selected"]
    extra = sorted({k for d in by_source.values() if isinstance(d, dict) for k in d} - set(keys))
    cols = [k for k in keys if k in ("read", "selected") or any(k in (by_source.get(s) or {}) for s in sources)]
    cols += extra
    src_rows = []
    for s in sources:
        m, c = by_source.get(s) or {}, computed.get(s, {})
        vals = [int(m[k]) if k in m else int(c.get(k, 0)) for k in cols]
        read = vals[cols.index("read")]
        sel = vals[cols.index("selected")]
        src_rows.append([s, *vals, f"{100.0 * sel / read:.1f}%" if read else "–"])
    per_src = table(["source", *cols, "kept"], src_rows, "counts by-source")
    return f'<div class="two-col"><div>{overall}</div><div>{per_src}</div></div>'


def _steps(manifest: dict[str, Any]) -> str:
    steps = manifest.get("steps") or []
    if not steps:
        return '<p class="empty">No pipeline steps recorded.</p>'
    rows = []
    for i, s in enumerate(steps, 1):
        dropped = ", ".join(f"{k}: {v:,}" if k else f"{v:,}" for k, v in sorted(_step_drops(s).items())) or "–"
        n_in, n_out = s.get("in"), s.get("out")
        kept = f"{100.0 * n_out / n_in:.1f}%" if isinstance(n_in, int) and isinstance(n_out, int) and n_in else "–"
        rows.append([i, s.get("step", ""), s.get("name", ""), compact_json(s.get("params", {})),
                     n_in if n_in is not None else "–", n_out if n_out is not None else "–", kept, dropped])
    return table(["#", "step", "name", "params", "in", "out", "kept", "dropped"], rows, "steps")


# ---------------------------------------------------------------- plots

def _plot_div(kind: str, key: int, title: str, caption: str = "") -> str:
    cap = f'<div class="caption">{caption}</div>' if caption else ""
    return (f'<figure class="card"><figcaption>{esc(title)}</figcaption>'
            f'<div class="plot" data-kind="{kind}" data-key="{key}"></div>{cap}</figure>')


def _hist_caption(h: dict[str, Any]) -> str:
    parts = []
    for label, key in (("pool", "stats_pool"), ("selected", "stats_sel")):
        st = h.get(key)
        if st:
            parts.append(f"{label} median <b>{fmt_num(st['median'])}</b> "
                         f"(p10 {fmt_num(st['p10'])}, p90 {fmt_num(st['p90'])})")
    missing = h["missing_pool"]
    if missing:
        parts.append(f"{missing:,} missing in pool")
    return " · ".join(parts) if parts else "no finite values"


def _extra(sections: list[dict[str, Any]], scatters: list[dict[str, Any]], seed: int) -> str:
    out = []
    for i, sec in enumerate(sections):
        if not isinstance(sec, dict):
            raise TypeError(f"extra_sections[{i}] must be a dict, got {type(sec).__name__}")
        body = []
        if sec.get("text"):
            body.append(f"<p>{esc(sec['text'])}</p>")
        if sec.get("html"):
            body.append(str(sec["html"]))  # trusted: produced by siftkit modules, documented as verbatim
        rows = sec.get("table")
        if rows:
            if isinstance(rows[0], dict):
                header = list(dict.fromkeys(k for r in rows for k in r))
                body.append(table(header, [[r.get(k, "") for k in header] for r in rows]))
            else:
                body.append(table(rows[0], rows[1:]))
        sc = sec.get("scatter")
        if sc:
            scatters.append(D.scatter(sc.get("x", []), sc.get("y", []), sc.get("selected"), seed=seed,
                                      in_pool=sc.get("in_pool"), n_pool=sc.get("n_pool"), n_sel=sc.get("n_sel")))
            scatters[-1].update(xlabel=str(sc.get("xlabel", "x")), ylabel=str(sc.get("ylabel", "y")))
            n = scatters[-1]
            div = _plot_div("scatter", len(scatters) - 1, sc.get("title", "pool vs selected"),
                            f"{len(n['pool']['x']):,} of {n['n_pool']:,} pool records and "
                            f"{len(n['sel']['x']):,} of {n['n_sel']:,} selected records shown (seeded sample)")
            body.append(f'<div class="grid">{div}</div>')
        out.append(_section(str(sec.get("title", f"Section {i + 1}")), "".join(body), f"extra-{i}"))
    return "".join(out)


def _turns_html(turns: list[dict[str, str]]) -> str:
    """Each turn with its role label; the text keeps its line breaks (``white-space: pre-wrap``)."""
    if not turns:
        return '<span class="empty">–</span>'
    return "".join(f'<div class="turn turn-{esc(t["role"]) if t["role"] != "…" else "gap"}">'
                   f'<span class="role">{esc(t["role"])}</span><div class="text">{esc(t["text"])}</div></div>'
                   for t in turns)


def _sample(rows: list[dict[str, Any]], extra_cols: list[str]) -> str:
    if not rows:
        return '<p class="empty">No records selected.</p>'
    header = ["row", "source", "turns", *extra_cols, "query", "response"]
    head = "".join(f'<th class="num">{esc(h)}</th>' if h in ("row", "turns", *extra_cols) else f"<th>{esc(h)}</th>"
                   for h in header)
    body = []
    for r in rows:
        cells = [f'<td class="num">{fmt_num(r["row"])}</td>', f"<td>{esc(r['source'])}</td>",
                 f'<td class="num">{fmt_num(r["turns"])}</td>']
        for c in extra_cols:
            v = r.get(c)
            cells.append(f'<td class="num">{fmt_num(v) if v is not None else "–"}</td>')
        cells.append(f'<td class="conv">{_turns_html(r["query"])}</td>')
        cells.append(f'<td class="conv">{_turns_html(r["response"])}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="sample"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _special_tokens(pool: pa.Table, signals: pa.Table, sel: np.ndarray) -> str:
    """Per source: records with literal special tokens (pool and selection), occurrences, the kinds."""
    if "special_tokens" not in signals.column_names or "source" not in pool.column_names:
        return ""
    counts = D.column_values(signals, "special_tokens")
    hit = np.nan_to_num(counts) > 0
    src = np.asarray(pool.column("source").to_pylist(), dtype=object).astype(str)
    kinds = signals.column("special_token_kinds").to_pylist() if "special_token_kinds" in signals.column_names \
        else [None] * len(src)
    rows = []
    for s in sorted(set(src.tolist())):
        m = src == s
        n_hit = int((hit & m).sum())
        if not n_hit:
            continue
        ks: dict[str, int] = {}
        for i in np.flatnonzero(hit & m).tolist():
            for k in (kinds[i] or "").split():
                ks[k] = ks.get(k, 0) + 1
        top = ", ".join(f"{k} ({v:,})" for k, v in sorted(ks.items(), key=lambda kv: (-kv[1], kv[0]))[:4])
        rows.append([s, int(m.sum()), n_hit, f"{100.0 * n_hit / max(int(m.sum()), 1):.1f}%",
                     int(np.nan_to_num(counts[m]).sum()), int((hit & m & sel).sum()), top])
    total = int(hit.sum())
    if not rows:
        return _section("Special tokens", '<p class="empty">No literal special tokens found.</p>', "special-tokens")
    note = (f"{total:,} of {len(src):,} records ({100.0 * total / max(len(src), 1):.1f}%) contain a literal special "
            f"token such as <|endoftext|>; the target tokenizer turns it into the real token at training time. "
            f"Drop them with --filter \"special_tokens == 0\" or write them escaped with --escape-special-tokens.")
    body = table(["source", "records", "with special tokens", "share", "occurrences", "selected with", "kinds"],
                 rows, "special-tokens")
    return _section("Special tokens", body, "special-tokens", note)


def _inputs_timings(manifest: dict[str, Any]) -> str:
    parts = []
    inputs = manifest.get("inputs") or []
    if inputs:
        rows = [[i.get("rel") or i.get("path", ""), i.get("source", ""), i.get("format", ""),
                 int(i.get("size", 0)), int(i.get("records", 0)), int(i.get("rejected", 0)),
                 str(i.get("sha256", ""))[:12]] for i in inputs]
        parts.append(table(["file", "source", "format", "bytes", "records", "rejected", "sha256"], rows,
                           "inputs"))
    side = []
    timings = manifest.get("timings") or {}
    if timings:
        rows = [[k, round(float(v), 3)] for k, v in timings.items()]
        side.append(table(["stage", "seconds"], rows, "timings"))
    cfg = manifest.get("config")
    if cfg:
        import yaml

        pretty = yaml.safe_dump(short_paths(orjson.loads(orjson.dumps(cfg, option=orjson.OPT_NON_STR_KEYS,
                                                                      default=str))),
                                sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
        side.append("<details><summary>full configuration (YAML; absolute paths shortened to their last part, "
                    f"manifest.json has them in full)</summary><pre>{esc(pretty)}</pre></details>")
    if side:
        parts.append(f'<div class="two-col">{"".join(side)}</div>')
    return "".join(parts) if parts else '<p class="empty">No inputs recorded.</p>'


# ---------------------------------------------------------------- entry point

def _check(pool: pa.Table, signals: pa.Table, selected: Any) -> np.ndarray:
    sel = np.asarray(selected)
    if sel.dtype != np.bool_:
        raise ValueError(f"selected must be a boolean mask over the pool rows, got dtype {sel.dtype}")
    if sel.ndim != 1 or sel.size != pool.num_rows:
        raise ValueError(f"selected has {sel.size} entries but the pool has {pool.num_rows} rows")
    if signals.num_columns and signals.num_rows != pool.num_rows:
        raise ValueError(f"signals has {signals.num_rows} rows but the pool has {pool.num_rows}: "
                         f"they must be aligned row-for-row")
    return sel


def render_report(pool: pa.Table, signals: pa.Table, selected: np.ndarray, manifest: dict, path: str,
                  extra_sections: list[dict] | None = None) -> str:
    """Write the report page to ``path`` and return the path.

    ``signals`` is aligned row-for-row with ``pool`` (may have no columns); ``selected`` is a boolean
    mask over the pool rows. ``extra_sections``: dicts with ``title`` and any of ``text`` (escaped),
    ``table`` (list of dicts, or list of lists with the header first; escaped), ``html`` (inserted
    verbatim: callers escape their own content) and ``scatter`` ({"x", "y", "selected", optional
    "title", "xlabel", "ylabel"}; capped to a seeded subsample).
    """
    manifest = manifest or {}
    sel = _check(pool, signals, selected)
    seed = manifest.get("seed")
    seed = seed if isinstance(seed, int) and seed >= 0 else 0
    n_pool, n_sel = pool.num_rows, int(sel.sum())
    sources = pool.column("source") if "source" in pool.column_names else pa.array([], pa.string())
    mix = D.source_mix(sources, sel)
    cols = D.numeric_columns(signals) if signals.num_columns else []
    values = {c: D.column_values(signals, c) for c in cols}
    hists = [D.histogram(c, values[c], sel) for c in cols]
    scatters: list[dict[str, Any]] = []
    extra_html = _extra(list(extra_sections or []), scatters, seed)
    sample_cols = [c for c in ("tokens_total", "chars_total") if c in values][:1]
    sample = D.sample_selected(pool, sel, seed=seed, extra={c: values[c] for c in sample_cols})
    tot = _totals(manifest, n_pool, n_sel)

    length_divs, other_divs = [], []
    for i, h in enumerate(hists):
        scale = "log scale" if h["log"] else "linear scale"
        div = _plot_div("hist", i, f"{h['name']} ({scale})", _hist_caption(h))
        (length_divs if D.is_length_signal(h["name"]) else other_divs).append(div)
    no_sig = '<p class="empty">No signals computed.</p>'
    length_html = f'<div class="grid">{"".join(length_divs)}</div>' if length_divs else no_sig
    other_html = f'<div class="grid">{"".join(other_divs)}</div>' if other_divs else no_sig
    sel_note = "" if n_sel else "No records selected: only the pool is shown."
    special_html = _special_tokens(pool, signals, sel) if signals.num_columns else ""
    body = "".join([
        _header(manifest),
        _tiles(tot),
        _section("Counts", _counts(manifest, tot, D.counts_by_source(sources, sel)), "counts"),
        _section("Pipeline steps", _steps(manifest), "steps"),
        _section("Source mix", _plot_div("sources", 0, "share of records per source",
                                         f"read {tot['read']:,} records · selected {tot['selected']:,} records"),
                 "sources", "Pool share vs selected share of each source."),
        _section("Length distributions", length_html, "lengths",
                 sel_note or "Pool vs selection on shared bins; bar height is the share of each set's "
                             "records, so the two compare regardless of size."),
        _section("Other signals", other_html, "signals", sel_note),
        special_html,
        extra_html,
        _section("Sample of selected records", _sample(sample, sample_cols), "sample",
                 f"{len(sample)} of {tot['selected']:,} selected records, seeded; every turn with its role, "
                 f"long turns truncated." if sample else ""),
        _section("Inputs and timings", _inputs_timings(manifest), "inputs"),
    ])
    payload = {"hists": hists, "sources": mix, "scatters": scatters}
    js = _asset("report.js")
    js_hash = base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode()
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; "
        f"script-src 'sha256-{js_hash}'; img-src data:\">"
        "<title>siftkit report</title>"
        f"<style>{_asset('report.css')}</style></head><body><main>{body}</main>"
        f'<script type="application/json" id="siftkit-data">{_json_for_script(payload)}</script>'
        f"<script>{js}</script></body></html>\n"
    )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(page)
    os.replace(tmp, path)
    return path
