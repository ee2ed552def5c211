"""The ``siftkit`` command line. Every subcommand maps onto a function of ``siftkit.api``.

Exit codes: 0 ok, 1 internal error, 2 usage/config error, 3 input data error, 4 empty result,
5 disk full, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from . import progress
from ._version import __version__
from .errors import ConfigError, SiftkitError

EPILOG = ("Docs: README.md. Exit codes: 0 ok, 2 usage/config error, 3 bad input data, 4 empty result, "
          "5 disk full.")
OVERWRITE_HELP = ("replace the output folder even if it holds files siftkit did not write (a previous siftkit "
                  "output is always replaced, atomically)")


FORMAT_CHOICES = ("messages", "sharegpt", "alternating", "alpaca", "prompt_completion", "qa", "preference", "kto")
PER_FILE_HELP = ("PATTERN (fnmatch, e.g. 'flan_cot/*.tsv' or '*.tsv') matches a file's path relative to its "
                 "input, its name, or its path as given")


class _HeaderAction(argparse.Action):
    """--header / --no-header [PATTERN]: for every input, or only for the files PATTERN matches."""

    def __init__(self, *args: Any, header: bool, **kw: Any):
        super().__init__(*args, **kw)
        self.header = header

    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        items = list(getattr(ns, self.dest) or [])
        items.append((values or None, self.header))
        setattr(ns, self.dest, items)


def _input_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input", "Options for some files only: prefix the value with 'PATTERN:' "
                             "(--format, --map, --source) or give PATTERN (--header, --no-header); "
                             + PER_FILE_HELP + ". Without a pattern an option applies to every input.")
    g.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="files, folders (read recursively), globs ('data/*.jsonl') or hf:NAME[:split]")
    g.add_argument("--format", action="append", default=[], metavar="[PATTERN:]FORMAT",
                   help=f"force the record format ({', '.join(FORMAT_CHOICES)}; default: detected per file), "
                        "e.g. --format alpaca or --format 'gpteacher/*.json:alpaca'")
    g.add_argument("--map", action="append", default=[], metavar="[PATTERN:]ROLE=SPEC",
                   help="explicit mapping for other layouts: --map user=0 --map assistant=2 (column index, "
                        "field name, or a template like '{question}\\n{context}'); for some files only: "
                        "--map 'flan_cot/*.tsv:user={0}'")
    g.add_argument("--source", action="append", default=[], metavar="[PATTERN:]NAME",
                   help="source name (default: folder or file name), for all inputs or, with 'PATTERN:', "
                        "for the files it matches")
    g.add_argument("--header", dest="header_opts", action=_HeaderAction, header=True, nargs="?", default=[],
                   metavar="PATTERN", help="CSV/TSV has a header row (all inputs, or the files PATTERN "
                                           "matches; put a pattern-less --header after the inputs)")
    g.add_argument("--no-header", dest="header_opts", action=_HeaderAction, header=False, nargs="?",
                   default=[], metavar="PATTERN", help="CSV/TSV has no header row (all inputs, or the files "
                                                       "PATTERN matches)")
    g.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                   help="on a malformed record or an unreadable file: stop with its location (raise, default) "
                        "or report it in rejects.jsonl and go on (skip)")


def _run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("signals")
    g.add_argument("--tokenizer", help="tokenizer for token counts: hub name, model folder, tokenizer.json or "
                                       ".gguf (default: offline XLM-R Unigram tokenizer)")
    g.add_argument("--cache-dir", default=".siftkit", help="signal cache folder (default: .siftkit)")
    g.add_argument("--workers", type=int, help="processes for reading and scoring (default: all cores for big pools)")
    g.add_argument("--engine", choices=["local", "ray"], default="local", help="where signals are computed")
    _ray_args(g)


def _ray_args(g: Any) -> None:
    g.add_argument("--shard-size", type=int, metavar="N",
                   help="records per cache part (default: the signal's, else 65,536; with --engine ray about "
                        "4 shards per actor, within 1,024-65,536)")
    g.add_argument("--ray-address", metavar="ADDRESS",
                   help="Ray cluster for --engine ray: host:port, ray://host:10001 or auto (default: "
                        "RAY_ADDRESS, else a local instance on 127.0.0.1)")


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def _unescape(v: str) -> str:
    """'\\n', '\\t', '\\r' and '\\\\' typed on a command line become the characters (other text,
    non-ASCII included, is kept as is)."""
    return re.sub(r"\\([ntr\\])", lambda m: _ESCAPES[m.group(1)], v) if "\\" in v else v


def _split_pattern(value: str) -> tuple[str | None, str]:
    """'PATTERN:VALUE' -> (PATTERN, VALUE); 'VALUE' -> (None, VALUE). The last ':' separates."""
    if ":" in value:
        pat, val = value.rsplit(":", 1)
        if pat.strip():
            return pat, val
    return None, value


def _map_item(it: str) -> tuple[str | None, str, str]:
    """'[PATTERN:]ROLE=SPEC' -> (PATTERN or None, ROLE, SPEC)."""
    if "=" not in it:
        raise ConfigError(f"--map expects [PATTERN:]ROLE=SPEC (e.g. user=0 or 'flan_cot/*.tsv:user={{0}}'), "
                          f"got {it!r}")
    head, v = it.split("=", 1)
    pat, role = _split_pattern(head)
    return pat, role.strip(), _unescape(v)


def _mapping(items: Sequence[str]) -> dict[str, str] | None:
    """The mapping of the pattern-less --map options (None when there are none)."""
    out = {}
    for it in items:
        pat, role, v = _map_item(it)
        if pat is None:
            out[role] = v
    return out or None


def _per_file(a: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(options for every input, per_file entries) from --format/--map/--source/--header/--no-header."""
    glob_opts: dict[str, Any] = {}
    per: dict[str, dict[str, Any]] = {}
    for it in a.format:
        pat, fmt = _split_pattern(it)
        if fmt not in FORMAT_CHOICES:
            raise ConfigError(f"--format {it!r}: unknown format {fmt!r}; known: {', '.join(FORMAT_CHOICES)} "
                              f"(for some files only: --format 'PATTERN:FORMAT')")
        (per.setdefault(pat, {}) if pat else glob_opts)["format"] = fmt
    for it in a.map:
        pat, role, v = _map_item(it)
        if pat is not None:
            per.setdefault(pat, {}).setdefault("mapping", {})[role] = v
    m = _mapping(a.map)
    if m:
        glob_opts["mapping"] = m
    for it in a.source:
        pat, name = _split_pattern(it)
        if not name.strip():
            raise ConfigError(f"--source {it!r}: empty source name")
        (per.setdefault(pat, {}) if pat else glob_opts)["source"] = name
    for pat, header in getattr(a, "header_opts", None) or []:
        (per.setdefault(pat, {}) if pat else glob_opts)["header"] = header
    return glob_opts, [{"match": pat, **opts} for pat, opts in per.items()]


def _inputs(a: argparse.Namespace) -> list[dict[str, Any]]:
    from .api import _input_list

    glob_opts, per_file = _per_file(a)
    inputs = _input_list(a.inputs, **glob_opts)
    if per_file:
        for d in inputs:
            d["per_file"] = list(d.get("per_file") or []) + [dict(o) for o in per_file]
    return inputs


def _parse_value(v: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(v)
    except yaml.YAMLError:
        return v


def _kv(items: Sequence[str], flag: str) -> dict[str, Any]:
    out = {}
    for it in items:
        if "=" not in it:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = _parse_value(v)
    return out


# ------------------------------------------------------------------ commands

def _fs_abspath(p: str) -> str:
    from .fs import abspath

    return abspath(p)


def _write_rejects(rows: list[dict[str, Any]], path: str) -> int:
    """``read --rejects``: JSON Lines at a local path (its folder made) or a URL (one PUT, siftkit.fs)."""
    from . import fs
    from .io.writers import write_jsonl

    if not fs.is_remote(path):
        os.makedirs(os.path.dirname(os.path.abspath(fs.local_path(path))) or ".", exist_ok=True)
    return write_jsonl(rows, path)


def cmd_read(a: argparse.Namespace) -> int:
    import orjson

    from . import fs
    from .api import read

    for dest, what in ((a.rejects, "the rejects file"), (a.out, "the output file")):
        if dest:    # a remote one: its store reachable and its bucket there before reading (else exit 2)
            fs.check_location(dest, what)
    try:
        pool = read(_inputs(a), on_error=a.on_error, workers=a.workers)
    except SiftkitError as e:
        if a.rejects:  # always written: here what reading got before it stopped, the error last
            n = _write_rejects(getattr(e, "rejects", []), a.rejects)
            progress.info(f"wrote {n} rejects to {fs.display(a.rejects)} (as far as reading got)")
        raise
    counts = pool.counts()
    _print_counts(counts, pool)
    if a.out:
        import pyarrow.parquet as pq

        if fs.is_remote(a.out):
            fs.write_table(a.out, pool.table)
        else:
            out = fs.local_path(a.out)
            os.makedirs(os.path.dirname(os.path.abspath(out)) or ".", exist_ok=True)
            pq.write_table(pool.table, out, compression="zstd")
        progress.info(f"wrote canonical pool to {a.out}")
    if a.rejects:  # always written, empty when there are none
        _write_rejects(pool.rejects, a.rejects)
        progress.info(f"wrote {len(pool.rejects)} rejects to {fs.display(a.rejects)}")
    if a.json:
        print(orjson.dumps(counts, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_score(a: argparse.Namespace) -> int:
    from .api import read, score, signal_specs
    from .preflight import check_signals

    signals = [s.strip() for s in a.signals.split(",") if s.strip()]
    check_signals(signal_specs(signals, a.tokenizer), engine=a.engine)   # before reading: a missing extra fails in a second, not after the read
    pool = _inputs(a) if a.engine == "ray" else read(_inputs(a), on_error=a.on_error, workers=a.workers)
    table = score(pool, signals, tokenizer=a.tokenizer, cache_dir=a.cache_dir, workers=a.workers,
                  engine=a.engine, refresh=a.refresh, shard_size=a.shard_size, ray_address=a.ray_address,
                  on_error=a.on_error)   # with ray the files are read on the workers
    progress.info(f"scored {table.num_rows:,} records: columns {', '.join(table.column_names)} "
                  f"(cache: {_fs_abspath(a.cache_dir)})")
    return 0


def cmd_inspect(a: argparse.Namespace) -> int:
    import orjson

    from .api import inspect

    signals = [s.strip() for s in a.signals.split(",") if s.strip()]
    summary = inspect(_inputs(a), signals=signals, tokenizer=a.tokenizer, cache_dir=a.cache_dir,
                      workers=a.workers, on_error=a.on_error, by=a.by)
    if a.json:
        print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
        return 0
    c = summary["counts"]
    print(f"records: {c['records']:,}   rejected: {c['rejected']:,}   files: {c['files']}")
    qs = summary["percentiles"]
    for name, entry in summary["signals"].items():
        print(f"\n{name}")
        print(f"  {'group':<28}{'n':>9}{'mean':>11}" + "".join(f"{'p' + str(int(q * 100)):>9}" for q in qs))
        for g, e in entry.items():
            if "q" not in e:
                continue
            print(f"  {str(g)[:27]:<28}{e['n']:>9,}{e['mean']:>11.1f}" + "".join(f"{x:>9.0f}" for x in e["q"]))
    return 0


def cmd_select(a: argparse.Namespace) -> int:
    from .api import selection_config
    from .config import build_config
    from .pipeline import run_selection

    data = selection_config(
        _inputs(a), budget=_parse_value(a.budget), method=a.method, by=a.by, filters=a.filter, dedup=a.dedup,
        stratify=a.stratify, quota=a.quota, seed=a.seed, tokenizer=a.tokenizer, preset=a.preset,
        on_error=a.on_error, cache_dir=a.cache_dir, workers=a.workers, engine=a.engine,
        shard_size=a.shard_size, ray_address=a.ray_address,
        method_params=_kv(a.param, "--param"), signals=[_parse_value(s) for s in a.signal],
        decontaminate=getattr(a, "decontaminate", None) or None,
        output={"dir": a.out, "format": a.output_format, "file_format": a.file_format,
                "report": a.report or a.diversity, "diversity": a.diversity,
                **({"escape_special_tokens": True} if a.escape_special_tokens else {}),
                **({"order": a.order} if a.order != "pool" else {})})
    if a.method is None and a.preset is None and not a.stratify:
        progress.info("no --method given: using random (the study's strong baseline)")
    cfg = build_config(data, "select")
    return _finish(run_selection(cfg), cfg, a)


def cmd_run(a: argparse.Namespace) -> int:
    from .api import _set_path
    from .config import build_config, load_recipe
    from .pipeline import run_selection

    data = load_recipe(a.recipe)
    for k, v in _kv(a.set, "--set").items():
        _set_path(data, k, v)
    if a.out:
        data.setdefault("output", {})
        if isinstance(data["output"], str):
            data["output"] = {"dir": data["output"]}
        data["output"]["dir"] = a.out
    if a.shard_size is not None:
        data["shard_size"] = a.shard_size
    if a.ray_address:
        if data.get("ray") is not None and not isinstance(data["ray"], dict):
            raise ConfigError(f"{a.recipe}: ray: expected a mapping, got {data['ray']!r}")
        data["ray"] = {**(data.get("ray") or {}), "address": a.ray_address}
    cfg = build_config(data, a.recipe)
    return _finish(run_selection(cfg), cfg, a)


def _finish(sel: Any, cfg: Any, a: argparse.Namespace) -> int:
    from .output import write_selection

    out = cfg.output
    out_dir = out.get("dir") or "siftkit-out"
    manifest = write_selection(sel, out_dir, out.get("format", "original"), out.get("file_format", "jsonl"),
                               bool(out.get("report", False)), bool(out.get("diversity", False)),
                               overwrite=bool(getattr(a, "overwrite", False)))
    c = manifest["counts"]
    for s in manifest["steps"]:
        drops = ", ".join(f"{k}: {v:,}" for k, v in s["dropped"].items())
        progress.info(f"  {s['step']:<7}{s['name']:<18}{s['in']:>10,} -> {s['out']:>10,}" + (f"   ({drops})" if drops else ""))
    progress.info(f"selected {c['selected']:,} of {c['records']:,} records ({c['rejected']:,} rejected) "
                  f"in {manifest['timings'].get('total', 0):.1f}s -> {out_dir}/")
    if not progress.is_quiet():
        print(os.path.join(out_dir, manifest["outputs"]["selected"]))
    return 0


def cmd_evolve(a: argparse.Namespace) -> int:
    from .api import evolve

    params: dict[str, Any] = {}
    for k in ("endpoint", "model", "api_key_env", "target", "rounds", "temperature", "seed", "max_tokens",
              "min_chars", "max_chars", "prompts_file", "concurrency"):
        v = getattr(a, k)
        if v is not None:
            params[k] = v
    if a.operations:
        params["operations"] = [o.strip() for o in a.operations.split(",") if o.strip()]
    if a.no_seeds:
        params["include_seeds"] = False
    if a.recipe:
        if a.inputs:
            raise ConfigError("evolve: give inputs or --recipe, not both")
        m = evolve(recipe=a.recipe, **params)
    else:
        if not a.inputs or not a.out:
            raise ConfigError("evolve: give INPUTS and --out (or --recipe)")
        m = evolve(a.inputs, a.out, format=a.format, file_format=a.file_format, cache_dir=a.cache_dir,
                   on_error=a.on_error, **params)
    c = m["counts"]
    progress.info(f"evolve: {c['written']} record(s) written ({c['evolved']} evolved), eliminated "
                  + (", ".join(f"{k}: {v}" for k, v in c["eliminated"].items()) or "none")
                  + f"; requests {m['usage']['requests']}, cache hits {m['usage']['cache_hits']}")
    return 0


def cmd_rank_variants(a: argparse.Namespace) -> int:
    from .generate.scorer import rank_variants

    m = rank_variants(a.evolved, a.out, endpoint=a.endpoint, model=a.model or "", kind=a.kind,
                      cache_dir=a.cache_dir, max_tokens=a.max_tokens, api_key_env=a.api_key_env)
    c = m["counts"]
    progress.info(f"rank-variants: {c['pairs']} (prompt, score) pair(s) from {c['groups_kept']} of {c['groups']} "
                  f"seed(s); failed {c['groups_failed'] or 'none'}; wrote {os.path.join(a.out, 'pairs.jsonl')}")
    return 0


def cmd_train_scorer(a: argparse.Namespace) -> int:
    from .generate.scorer import train_scorer

    train: dict[str, Any] = {}
    for k in ("epochs", "lr", "max_length", "batch_size", "micro_batch_size", "mode"):
        v = getattr(a, k)
        if v is not None:
            train[k] = v
    info = train_scorer(a.pairs, a.base_model, a.out, kind=a.kind, train=train, seed=a.seed, device=a.device)
    progress.info(f"train-scorer: {info['pairs']} pair(s), {info['steps']} step(s), loss {info['train_loss']:.4f}; "
                  f"use it with the deita signal: {a.kind}_model={a.out}")
    return 0


def cmd_testset(a: argparse.Namespace) -> int:
    import json as _json

    from .api import testset

    params: dict[str, Any] = {}
    if a.mix:
        try:
            params["mix"] = {k: float(v) for k, v in (x.split("=", 1) for x in a.mix.split(","))}
        except ValueError:
            raise ConfigError(f"testset: --mix is KIND=WEIGHT,... (got {a.mix!r})") from None
    if a.embedding:
        if a.embedding.lstrip().startswith("{"):
            try:
                params["embedding"] = _json.loads(a.embedding)
            except ValueError:
                raise ConfigError(f"testset: --embedding is a backend name or a JSON mapping (got "
                                  f"{a.embedding!r})") from None
        else:
            params["embedding"] = {"backend": a.embedding}
    for k in ("endpoint", "model", "chunk_chars", "max_chunks", "text_field", "max_tokens", "seed", "prompts_file",
              "api_key_env"):
        v = getattr(a, k)
        if v is not None:
            params[k] = v
    if a.recipe:
        if a.inputs or a.out:
            raise ConfigError("testset: give INPUTS --out or --recipe, not both")
        m = testset(recipe=a.recipe, **params)
    else:
        if not a.inputs or not a.out or not a.endpoint:
            raise ConfigError("testset: give INPUTS, --out and --endpoint (or --recipe)")
        m = testset(a.inputs, a.out, cache_dir=a.cache_dir or ".siftkit", **params)
    c = m["counts"]
    progress.info(f"testset: {c['kept']} question(s) kept of {c['chunks']} chunk(s) "
                  f"({_json.dumps(c['kept_by_kind'])}); dropped {_json.dumps(c['dropped_by_reason'])}; "
                  f"related by {m['related_by']['similarity']}")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from .api import report

    path = report(a.out_dir, a.output)
    print(path)
    return 0


def cmd_list(a: argparse.Namespace) -> int:
    from .presets import _all_presets
    from .registry import derivation_names, selector_names, signal_names

    if a.what in ("signals", "all"):
        print("signals:   " + ", ".join(signal_names()))
    if a.what in ("selectors", "all"):
        print("selectors: " + ", ".join(selector_names()))
    if a.what in ("derivations", "all"):
        print("derivations: " + ", ".join(derivation_names()) + "  (derived models: a recipe's models: "
              "{NAME: {derive: ..., ...}})")
    if a.what in ("presets", "all"):
        print("presets:")
        for n, p in sorted(_all_presets().items()):
            print(f"  {n:<22}{p.get('doc', '')}")
    return 0


def _print_counts(counts: dict[str, Any], pool: Any) -> None:
    print(f"read {counts['records']:,} records from {counts['files']} file(s); rejected {counts['rejected']:,}"
          + (f" ({', '.join(f'{k}: {v}' for k, v in counts['rejected_by_reason'].items() if v)})"
             if counts["rejected"] else "")
          + (f"; {counts['defects']} file defect(s)" if counts["defects"] else "")
          + (f"; {counts['rejected_files']} file(s) rejected" if counts.get("rejected_files") else "")
          + (f"; {counts['skipped_files']} file(s) skipped" if counts.get("skipped_files") else ""))
    print(f"  {'source':<32}{'read':>10}{'rejected':>10}")
    for src, c in counts["by_source"].items():
        print(f"  {src[:31]:<32}{c['read']:>10,}{c['rejected']:>10,}")
    for r in pool.rejects:
        if r.get("scope") == "file":  # the warning above gave the full reason
            held = f"{r['records']:,} record(s)" if r.get("records") is not None else "records not countable"
            kept = f", {r['kept']:,} read before the problem kept" if r.get("kept") else ""
            print(f"  x {r['file']}: file rejected ({r['code']}; {held}{kept})")
        elif r["code"] == "defect" or r["code"] == "parse_error":
            loc = "".join(f":{x}" for x in (r["line"], r["column"]) if x is not None)
            print(f"  ! {r['file']}{loc}: {r['reason']}")


# ------------------------------------------------------------------ parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="siftkit", description="Select the SFT data that matters from large "
                                "instruction pools: read, score once, select many times, report.", epilog=EPILOG)
    p.add_argument("--version", action="version", version=f"siftkit {__version__}")
    _global_flags(p, top=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("read", help="read a pool, check formats, count records and rejects", epilog=EPILOG)
    _input_args(r)
    r.add_argument("--workers", type=int)
    r.add_argument("--out", help="write the canonical pool as Parquet")
    r.add_argument("--rejects", help="write rejected records (JSONL) here")
    r.add_argument("--json", action="store_true", help="print counts as JSON")
    r.set_defaults(func=cmd_read)

    s = sub.add_parser("score", help="compute and cache signals (lengths, tokens, hashes, ...)", epilog=EPILOG)
    _input_args(s)
    _run_args(s)
    s.add_argument("--signals", default="text_stats,tokens,exact_hash,compression",
                   help="comma-separated signal names (see `siftkit list signals`)")
    s.add_argument("--refresh", action="store_true", help="recompute even if cached")
    s.set_defaults(func=cmd_score)

    i = sub.add_parser("inspect", help="counts and signal percentiles, overall and per source", epilog=EPILOG)
    _input_args(i)
    _run_args(i)
    i.add_argument("--signals", default="text_stats,tokens", help="comma-separated signal names")
    i.add_argument("--by", default="source", help="group by this column (default: source)")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.set_defaults(func=cmd_inspect)

    se = sub.add_parser("select", help="filter, dedup and select a subset; write records + manifest",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="examples:\n  siftkit select pool/ --budget 50000 --out out/\n"
                                    "  siftkit select pool/ --budget 5% --method top --by tokens_response "
                                    "--dedup first --out out/\n"
                                    "  siftkit select pool/ --budget 10000 --stratify source --quota equal "
                                    "--out out/ --report")
    _input_args(se)
    _run_args(se)
    g = se.add_argument_group("selection")
    g.add_argument("--budget", "-n", required=True, help="records to select: a count (50000, 50k), a fraction "
                                                         "(0.05) or a percentage (5%%)")
    g.add_argument("--method", help="selector: random (default), top, bottom, or any registered selector")
    g.add_argument("--by", help="signal column to rank by (top/bottom/stratified), e.g. tokens_response")
    g.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="extra selector parameter")
    g.add_argument("--filter", action="append", default=[], metavar="EXPR",
                   help="keep records where EXPR holds, e.g. 'tokens_response >= 10' (repeatable)")
    g.add_argument("--dedup", help="exact dedup before selecting: first | longest (or minhash, semantic)")
    g.add_argument("--decontaminate", action="append", default=[], metavar="PATH",
                   help="drop records that overlap evaluation items in PATH (eval files or a folder such as "
                        "bench's eval folder; repeatable): exact and 13-gram matches, see docs/cleaning.md")
    g.add_argument("--stratify", metavar="COLUMN", help="split the budget across values of COLUMN (e.g. source)")
    g.add_argument("--quota", choices=["proportional", "equal"], default="proportional")
    g.add_argument("--preset", help="a named pipeline (see `siftkit list presets`)")
    g.add_argument("--signal", action="append", default=[], metavar="SPEC",
                   help="extra signal to compute, e.g. \"{name: tokens, tokenizer: gpt2}\"")
    g.add_argument("--seed", type=int, default=0)
    o = se.add_argument_group("output")
    o.add_argument("--out", "-o", required=True, help="output folder")
    o.add_argument("--output-format", choices=["original", "messages", "sharegpt", "alpaca"], default="original")
    o.add_argument("--file-format", choices=["jsonl", "parquet"], default="jsonl")
    o.add_argument("--order", choices=["pool", "pick"], default="pool",
                   help="order of the records file: pool (input order, the default) or pick (the order the "
                        "budgeted selector picked them: any prefix is a smaller selection of the same kind); "
                        "_siftkit/selection.parquet's rank holds the pick order either way")
    o.add_argument("--report", action="store_true", help="also write report.html")
    o.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    o.add_argument("--escape-special-tokens", action="store_true",
                   help="write literal special tokens (<|endoftext|>, [INST], ...) in an inert form (a zero-width "
                        "space after the first character); see the special_tokens signal")
    o.add_argument("--diversity", action="store_true",
                   help="add diversity metrics (coverage, cluster entropy, Vendi, 2-D map) to the report, "
                        "computing default embeddings if no selector used any (needs [embed] for k-means)")
    se.set_defaults(func=cmd_select)

    ru = sub.add_parser("run", help="run a YAML recipe (same options as select)", epilog=EPILOG)
    ru.add_argument("recipe", help="recipe.yaml")
    ru.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a recipe key, e.g. --set budget=1000 --set output.dir=out2")
    ru.add_argument("--out", "-o", help="output folder (overrides output.dir)")
    ru.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    _ray_args(ru)
    ru.set_defaults(func=cmd_run)

    ev = sub.add_parser("evolve", help="evolve instructions or responses with an LLM (Evol-Instruct / DEITA); "
                        "records with lineage + manifest", epilog=EPILOG)
    ev.add_argument("inputs", nargs="*", help="seed files or folders (any format siftkit reads)")
    ev.add_argument("--recipe", help="an evolve recipe (YAML: inputs, output, cache_dir, evolve)")
    ev.add_argument("--out", help="output folder")
    ev.add_argument("--endpoint", help="base URL of an OpenAI-compatible server (http://127.0.0.1:8080/v1)")
    ev.add_argument("--model", help="model name (default: the first the server lists)")
    ev.add_argument("--api-key-env", dest="api_key_env", help="NAME of the variable holding the API key")
    ev.add_argument("--target", choices=["instruction", "response"], help="what to evolve (default instruction)")
    ev.add_argument("--rounds", type=int, help="rounds M (default 1)")
    ev.add_argument("--operations", help="comma-separated operations (default: all of the target)")
    ev.add_argument("--temperature", type=float)
    ev.add_argument("--seed", type=int)
    ev.add_argument("--max-tokens", dest="max_tokens", type=int)
    ev.add_argument("--min-chars", dest="min_chars", type=int)
    ev.add_argument("--max-chars", dest="max_chars", type=int)
    ev.add_argument("--prompts-file", dest="prompts_file", help="YAML overriding siftkit's evolution prompts")
    ev.add_argument("--concurrency", type=int)
    ev.add_argument("--no-seeds", action="store_true", help="do not write the seeds themselves (round 0)")
    ev.add_argument("--format", default="messages", choices=["messages", "sharegpt", "alpaca"])
    ev.add_argument("--file-format", dest="file_format", default="jsonl", choices=["jsonl", "parquet"])
    ev.add_argument("--cache-dir", dest="cache_dir", default=".siftkit")
    ev.add_argument("--on-error", dest="on_error", default="raise", choices=["raise", "skip"])
    ev.set_defaults(func=cmd_evolve)

    rk = sub.add_parser("rank-variants", help="DEITA: score each seed's evolved variants in one judge call; "
                        "(prompt, score) pairs", epilog=EPILOG)
    rk.add_argument("evolved", help="an evolve output's evolved.jsonl (messages format)")
    rk.add_argument("--out", required=True, help="output folder (pairs.jsonl, manifest.json)")
    rk.add_argument("--endpoint", required=True)
    rk.add_argument("--model")
    rk.add_argument("--api-key-env", dest="api_key_env")
    rk.add_argument("--kind", choices=["complexity", "quality"], default="complexity")
    rk.add_argument("--max-tokens", dest="max_tokens", type=int, default=64)
    rk.add_argument("--cache-dir", dest="cache_dir", default=".siftkit")
    rk.set_defaults(func=cmd_rank_variants)

    ts = sub.add_parser("train-scorer", help="DEITA: fine-tune a causal LM to emit the score of (prompt, score) "
                        "pairs; load it in the deita signal by path", epilog=EPILOG)
    ts.add_argument("pairs", help="pairs.jsonl from rank-variants")
    ts.add_argument("--base-model", dest="base_model", required=True, help="hub name, folder or .gguf")
    ts.add_argument("--out", required=True, help="folder for the trained scorer")
    ts.add_argument("--kind", choices=["complexity", "quality"], default="complexity")
    ts.add_argument("--mode", choices=["full", "lora"])
    ts.add_argument("--epochs", type=float)
    ts.add_argument("--lr", type=float)
    ts.add_argument("--max-length", dest="max_length", type=int)
    ts.add_argument("--batch-size", dest="batch_size", type=int)
    ts.add_argument("--micro-batch-size", dest="micro_batch_size", type=int)
    ts.add_argument("--seed", type=int, default=0)
    ts.add_argument("--device", default="auto")
    ts.set_defaults(func=cmd_train_scorer)

    tq = sub.add_parser("testset", help="Ragas-style evaluation questions from documents (txt, md, html, jsonl)",
                        epilog=EPILOG)
    tq.add_argument("inputs", nargs="*", help="document files or folders")
    tq.add_argument("--recipe", help="a testset recipe (YAML: inputs, output, cache_dir, testset: {...})")
    tq.add_argument("--out")
    tq.add_argument("--endpoint")
    tq.add_argument("--model")
    tq.add_argument("--api-key-env", dest="api_key_env")
    tq.add_argument("--mix", help="KIND=WEIGHT,... over simple, reasoning, conditional, multi_context, "
                    "conversational")
    tq.add_argument("--embedding", help="relate chunks by embedding similarity: an embedding backend (static, "
                    "sentence-transformers) or a JSON mapping of embedding-signal settings (default: TF-IDF)")
    tq.add_argument("--chunk-chars", dest="chunk_chars", type=int)
    tq.add_argument("--max-chunks", dest="max_chunks", type=int)
    tq.add_argument("--text-field", dest="text_field", help="the text field of .jsonl documents (default text)")
    tq.add_argument("--max-tokens", dest="max_tokens", type=int)
    tq.add_argument("--seed", type=int)
    tq.add_argument("--prompts-file", dest="prompts_file")
    tq.add_argument("--cache-dir", dest="cache_dir", help="default .siftkit (with --recipe: the recipe's)")
    tq.set_defaults(func=cmd_testset)

    rp = sub.add_parser("report", help="(re)build report.html for an output folder", epilog=EPILOG)
    rp.add_argument("out_dir", help="a folder written by select/run")
    rp.add_argument("--output", help="where to write the HTML (default: OUT_DIR/report.html)")
    rp.set_defaults(func=cmd_report)

    from .bench.cli import add_bench_parser  # argparse only: no torch/trl import until it runs

    add_bench_parser(sub)

    ls = sub.add_parser("list", help="list signals, selectors, derivations and presets", epilog=EPILOG)
    ls.add_argument("what", nargs="?", choices=["signals", "selectors", "derivations", "presets", "all"],
                    default="all")
    ls.set_defaults(func=cmd_list)
    for sp in sub.choices.values():        # -q / -v / --log-format also after the subcommand
        _global_flags(sp, top=False)
    return p


def _global_flags(p: argparse.ArgumentParser, top: bool) -> None:
    """-q, -v and --log-format, accepted before and after the subcommand. On subparsers their default is
    SUPPRESS, so a flag given before the subcommand is not reset by the subparser's defaults."""
    d: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    g = p.add_argument_group("progress and logs")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars or status lines "
                   "(warnings and errors only)", **d)
    g.add_argument("-v", "--verbose", action="store_true", help="also debug lines: cache hits, fingerprints, "
                   "worker counts", **d)
    g.add_argument("--log-format", choices=list(progress.LOG_FORMATS), help="text (default: bars on a terminal, "
                   "one line per stage otherwise) or json (one JSON event per line on stderr, no bars)",
                   **(d or {"default": "text"}))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if not getattr(a, "command", None):
        parser.print_help()
        return 2
    progress.configure(quiet=a.quiet, verbose=a.verbose, log_format=a.log_format)
    progress.debug(f"siftkit {__version__}, python {sys.version.split()[0]}, {os.cpu_count()} cores, "
                   f"command {a.command}")
    progress.event("command_start", command=a.command, version=__version__)
    import time

    t0 = time.perf_counter()
    rc = 1
    try:
        rc = a.func(a)
        return rc
    except SiftkitError as e:
        progress.error(str(e), exit_code=e.exit_code)
        rc = e.exit_code
        return rc
    except KeyboardInterrupt:
        if progress.log_format() == "json":
            progress.error("interrupted", exit_code=130)
        else:
            print("siftkit: interrupted", file=sys.stderr)
        rc = 130
        return rc
    except BrokenPipeError:
        rc = 0
        return rc
    finally:
        progress.event("command_end", command=a.command, exit_code=rc,
                       seconds=round(time.perf_counter() - t0, 3))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
