"""Evol-Instruct style evolution (``siftkit evolve``): rewrite seed instructions into harder or broader
variants (``target="instruction"``, DEITA's Evol Complexity) or seed responses into better ones
(``target="response"``, Evol Quality), round by round, through one cached LLM client.

Each seed is a chain: in round ``r`` its last kept node is rewritten with one operation (picked from
``operations`` by a hash of the seed id, the round and ``seed``, so reruns pick the same), and for an
instruction the model then answers the new instruction. A rewrite or an answer that fails a rule below is
eliminated with its reason (written to ``_siftkit/eliminated.jsonl`` and counted in the manifest); the chain
then goes on from the parent in the next round. Kept nodes get lineage columns ``root_id``, ``parent_id``,
``round`` and ``operation``.

Elimination reasons (checked in this order, :func:`eliminate`):

==================  =============================================================================
``request_failed``  the server refused the request (``http_<code>``) or stayed unavailable
``empty``           the model returned nothing
``truncated``       the answer stopped at ``max_tokens``
``stopwords``       the text is only punctuation and stop words
``template_copied`` a phrase of our prompt template (``template_words``) is in the output
``could_not_answer``the model declined ("sorry", "I cannot", ...) in a short answer (under 80 words)
``length``          the text has fewer than ``min_chars`` or more than ``max_chars`` characters
``no_gain``         a rewrite with no information gain over its parent: the same words, or only words
                    the parent already has and no more of them
==================  =============================================================================

Every request is in the response cache (``<cache_dir>/llm``), so a rerun sends nothing it already paid for
and writes byte-identical records.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import pyarrow.parquet as pq
import xxhash

from .. import progress
from .._version import __version__
from ..errors import ConfigError, EndpointError
from ..fs import local_folder
from ..io.pool import read_pool
from ..io.writers import CONVERTERS, table_from_rows, write_jsonl
from ..llm.client import Client, Endpoint
from ..llm.runs import open_cache
from ..llm.structured import answer_text
from ..llm.usage import Usage, cost
from .prompts import load_prompts

REASONS = ("request_failed", "empty", "truncated", "stopwords", "template_copied", "could_not_answer",
           "length", "no_gain")
TARGETS = ("instruction", "response")
INSTRUCTION_OPS = ("constraints", "deepen", "concretise", "reasoning", "complicate_input", "breadth")
RESPONSE_OPS = ("improve_response",)
FORMATS = ("messages", "sharegpt", "alpaca")
LINEAGE = ("root_id", "parent_id", "round", "operation")
REFUSALS = ("sorry", "i cannot", "i can't", "i can not", "i am unable", "i'm unable", "as an ai",
            "i am not able", "i'm not able", "cannot assist", "can't help")
STOPWORDS = frozenset("""a an the and or but if then so of to in on at by for with from as is are was were be been
being it its this that these those there here i you he she we they me him her us them my your our their what
which who whom whose when where why how not no yes do does did done have has had can could will would shall
should may might must just also very too than into over under about up down out off again only own same such
some any each all both few more most other nor ok okay""".split())  # noqa: SIM905
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


@dataclass
class EvolveConfig:
    endpoint: str | None = None
    model: str = ""
    api_key_env: str | None = None
    target: str = "instruction"                 # instruction (Evol Complexity) | response (Evol Quality)
    rounds: int = 1                             # M
    operations: list[str] | None = None         # default: every operation of the target
    temperature: float = 0.7
    seed: int = 0
    max_tokens: int = 256
    min_chars: int = 8
    max_chars: int = 4000
    prompts_file: str | None = None
    concurrency: int = 8
    timeout: float = 60.0
    max_retries: int = 4
    include_seeds: bool = True                  # write the seeds too (round 0, operation "seed")
    extra: dict[str, Any] = field(default_factory=dict)   # further request-body fields

    def check(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(f"evolve: target must be one of {TARGETS}, got {self.target!r}")
        if int(self.rounds) < 1:
            raise ConfigError(f"evolve: rounds must be >= 1, got {self.rounds}")
        if int(self.min_chars) < 0 or int(self.max_chars) < int(self.min_chars):
            raise ConfigError(f"evolve: need 0 <= min_chars <= max_chars, got {self.min_chars}, {self.max_chars}")
        if int(self.max_tokens) < 1:
            raise ConfigError("evolve: max_tokens must be >= 1")


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def eliminate(parent: str, text: str, *, stage: str, template_words: list[str], min_chars: int = 8,
              max_chars: int = 4000, finish_reason: str | None = None) -> str:
    """The reason ``text`` (a rewrite of ``parent`` when ``stage`` is ``instruction``/``response``, or an
    answer when ``stage`` is ``answer``) is eliminated, or ``""`` when it is kept."""
    t = text.strip()
    if not t:
        return "empty"
    if finish_reason == "length":
        return "truncated"
    ws = words(t)
    if not ws or all(w in STOPWORDS for w in ws):
        return "stopwords"
    low, plow = t.lower(), parent.lower()
    if any(p.lower() in low and p.lower() not in plow for p in template_words):
        return "template_copied"
    if len(ws) < 80 and any(r in low for r in REFUSALS) and not any(r in plow for r in REFUSALS):
        return "could_not_answer"
    if not min_chars <= len(t) <= max_chars:
        return "length"
    if stage != "answer":
        pw = words(parent)
        if ws == pw or (set(ws) <= set(pw) and len(ws) <= len(pw)):
            return "no_gain"
    return ""


def _pick(ops: list[str], root: str, rnd: int, seed: int) -> str:
    h = xxhash.xxh64_intdigest(f"{seed}\x00{root}\x00{rnd}".encode())
    return ops[h % len(ops)]


def _seed_pairs(table: Any) -> list[tuple[str, str, str, str | None]]:
    """(id, source, first user turn, the assistant turn after it or None) per record."""
    out = []
    for rid, src, msgs in zip(table.column("id").to_pylist(), table.column("source").to_pylist(),
                              table.column("messages").to_pylist()):
        user, answer = None, None
        for m in msgs or []:
            if user is None and m["role"] == "user":
                user = m["content"] or ""
            elif user is not None and m["role"] == "assistant":
                answer = m["content"] or ""
                break
        out.append((str(rid), str(src), user, answer))
    return out


class _Evolver:
    def __init__(self, cfg: EvolveConfig, cache_dir: str):
        cfg.check()
        self.cfg = cfg
        self.prompts = load_prompts(cfg.prompts_file)
        kind = cfg.target
        known = [n for n, op in self.prompts["operations"].items() if op["kind"] == kind]
        self.ops = list(cfg.operations) if cfg.operations else known
        for o in self.ops:
            if o not in known:
                raise ConfigError(f"evolve: unknown {kind} operation {o!r}; known: {', '.join(known)}")
        self.ep = Endpoint(url=cfg.endpoint, model=cfg.model, api_key_env=cfg.api_key_env, timeout=cfg.timeout,
                           max_retries=cfg.max_retries, concurrency=cfg.concurrency)
        self.ep.ready("evolve")
        self.usage = Usage()
        self.cache_folder = os.path.abspath(local_folder(cache_dir, "llm"))
        self.client = Client(self.ep, open_cache(self.cache_folder), self.usage, tag=self.fingerprint(),
                             who="evolve")

    def fingerprint(self) -> str:
        c = self.cfg
        blob = orjson.dumps({"prompts": self.prompts, "ops": self.ops, "target": c.target, "model": self.ep.model,
                             "temperature": c.temperature, "seed": c.seed, "max_tokens": c.max_tokens,
                             "extra": c.extra}, option=orjson.OPT_SORT_KEYS)
        return "evolve-" + xxhash.xxh3_64_hexdigest(blob)

    def body(self, system: str, user: str, salt: str) -> dict[str, Any]:
        c = self.cfg
        # the per-request seed makes each chain's sampling its own and reproducible
        seed = xxhash.xxh32_intdigest(f"{c.seed}\x00{salt}".encode()) & 0x7FFFFFFF
        return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
                "temperature": float(c.temperature), "seed": seed, "max_tokens": int(c.max_tokens), **c.extra}

    def ask(self, bodies: list[dict[str, Any]]) -> list[tuple[str, str | None, str]]:
        """(text, finish_reason, failure reason) per body; stops the run when the endpoint stayed down."""
        outs = self.client.complete(bodies)
        bad = [o.reason for o in outs if o.reason.startswith("unavailable:")]
        if bad:
            raise EndpointError(f"evolve: {len(bad)} of {len(outs)} request(s) to {self.ep.url} failed after "
                                f"{self.ep.max_retries} retries; the answers received are cached in "
                                f"{self.cache_folder}: rerun to resume")
        res = []
        for o in outs:
            if o.response is None:
                res.append(("", None, o.reason or "no_answer"))
            else:
                t, f = answer_text(o.response)
                res.append((t, f, ""))
        return res


def _rewrite_prompt(prompts: dict[str, Any], op: str, node: dict[str, Any]) -> str:
    return prompts["operations"][op]["template"].format(instruction=node["instruction"],
                                                        response=node.get("response") or "")


def evolve(inputs: Any, out_dir: str, cfg: EvolveConfig | None = None, *, format: str = "messages",
           file_format: str = "jsonl", cache_dir: str = ".siftkit", on_error: str = "raise",
           **params: Any) -> dict[str, Any]:
    """Evolve the records of ``inputs`` (anything ``siftkit read`` reads) and write ``out_dir/evolved.*``
    (``format``: messages | sharegpt | alpaca, with lineage columns), ``_siftkit/eliminated.jsonl`` and
    ``manifest.json``. ``params`` are :class:`EvolveConfig` fields. Returns the manifest."""
    if format not in FORMATS:
        raise ConfigError(f"evolve: format must be one of {FORMATS} (generated records have no original), "
                          f"got {format!r}")
    if file_format not in ("jsonl", "parquet"):
        raise ConfigError(f"evolve: file_format must be jsonl or parquet, got {file_format!r}")
    if cfg is None:
        names = set(EvolveConfig.__dataclass_fields__)
        unknown = sorted(set(params) - names)
        if unknown:
            raise ConfigError(f"evolve: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        cfg = EvolveConfig(**params)
    t0 = time.perf_counter()
    ev = _Evolver(cfg, cache_dir)
    pool = read_pool(inputs, on_error=on_error)
    words_t = list(ev.prompts["template_words"])
    P = ev.prompts
    kept: list[dict[str, Any]] = []
    eliminated: list[dict[str, Any]] = []
    chains: list[dict[str, Any]] = []
    seed_skips: Counter[str] = Counter()
    for rid, src, user, answer in _seed_pairs(pool.table):
        if not user:
            seed_skips["no_instruction"] += 1
            eliminated.append({"id": rid, "root_id": rid, "parent_id": None, "round": 0, "operation": "seed",
                               "stage": "seed", "reason": "no_instruction", "text": None})
            continue
        if cfg.target == "response" and not answer:
            seed_skips["no_response"] += 1
            eliminated.append({"id": rid, "root_id": rid, "parent_id": None, "round": 0, "operation": "seed",
                               "stage": "seed", "reason": "no_response", "text": None})
            continue
        node = {"id": rid, "source": src, "root_id": rid, "parent_id": None, "round": 0, "operation": "seed",
                "instruction": user, "response": answer}
        chains.append(node)
        if cfg.include_seeds:
            kept.append(node)
    lim = {"min_chars": int(cfg.min_chars), "max_chars": int(cfg.max_chars), "template_words": words_t}
    per_round: list[dict[str, Any]] = []
    for rnd in range(1, int(cfg.rounds) + 1):
        counts: dict[str, Counter[str]] = {"instruction": Counter(), "answer": Counter(), "response": Counter()}
        made = []
        for node in chains:
            op = _pick(ev.ops, node["root_id"], rnd, cfg.seed)
            made.append({"id": f"{node['root_id']}-r{rnd}", "source": node["source"], "root_id": node["root_id"],
                         "parent_id": node["id"], "round": rnd, "operation": op,
                         "instruction": node["instruction"], "response": node["response"], "_parent": node})
        stage = "instruction" if cfg.target == "instruction" else "response"
        got = ev.ask([ev.body(P["system"], _rewrite_prompt(P, m["operation"], m["_parent"]), m["id"]) for m in made])
        survivors = []
        for m, (text, fin, fail) in zip(made, got):
            parent_text = m["_parent"][stage] or ""
            why = "request_failed" if fail else eliminate(parent_text, text, stage=stage, finish_reason=fin, **lim)
            if why:
                counts[stage][why] += 1
                eliminated.append({**_public(m), "stage": stage, "reason": why, "detail": fail or None,
                                   "text": text})
                continue
            m[stage] = text.strip()
            survivors.append(m)
        if cfg.target == "instruction" and survivors:
            got = ev.ask([ev.body(P["answer_system"], m["instruction"], m["id"] + "/answer") for m in survivors])
            answered = []
            for m, (text, fin, fail) in zip(survivors, got):
                why = "request_failed" if fail else eliminate(m["instruction"], text, stage="answer",
                                                                finish_reason=fin, **lim)
                if why:
                    counts["answer"][why] += 1
                    eliminated.append({**_public(m), "stage": "answer", "reason": why, "detail": fail or None,
                                       "text": text})
                    continue
                m["response"] = text.strip()
                answered.append(m)
            survivors = answered
        by_root = {m["root_id"]: m for m in survivors}
        chains = [by_root.get(n["root_id"], n) for n in chains]   # a failed chain goes on from its parent
        for m in survivors:
            m.pop("_parent", None)
            kept.append(m)
        per_round.append({"round": rnd, "attempted": len(made), "kept": len(survivors),
                          "eliminated": {k: dict(sorted(v.items())) for k, v in counts.items() if v}})
        progress.info(f"evolve round {rnd}: {len(survivors)} of {len(made)} kept")
    for e in eliminated:
        e.pop("_parent", None)
    os.makedirs(os.path.join(out_dir, "_siftkit"), exist_ok=True)
    name = f"evolved.{file_format}"
    rows = [_row(n, format) for n in kept]
    path = os.path.join(out_dir, name)
    if file_format == "jsonl":
        write_jsonl(rows, path)
    else:
        tmp = path + ".tmp"
        pq.write_table(table_from_rows(rows), tmp, compression="zstd")
        os.replace(tmp, path)
    write_jsonl(eliminated, os.path.join(out_dir, "_siftkit", "eliminated.jsonl"))
    total: Counter[str] = Counter()
    for r in per_round:
        for c in r["eliminated"].values():
            total.update(c)
    total.update(seed_skips)
    u = ev.usage.snapshot()
    u["cost"] = cost(u["prompt_tokens"], u["completion_tokens"], None, None)
    u["model"] = ev.ep.model
    manifest = {
        "command": "evolve", "siftkit_version": __version__, "fingerprint": ev.fingerprint(),
        "config": {**{k: v for k, v in asdict(cfg).items() if k not in ("endpoint", "api_key_env")},
                   "operations": ev.ops, "model": ev.ep.model},
        "counts": {"seeds": pool.table.num_rows, "read_rejects": len(pool.rejects), "chains": len(chains),
                   "seeds_skipped": dict(sorted(seed_skips.items())), "rounds": per_round,
                   "written": len(rows), "evolved": len(rows) - (len(chains) if cfg.include_seeds else 0),
                   "eliminated": dict(sorted(total.items()))},
        "outputs": {"records": name, "format": format, "file_format": file_format,
                    "eliminated": "_siftkit/eliminated.jsonl", "lineage_columns": list(LINEAGE)},
        "usage": u, "response_cache": ev.cache_folder, "seconds": round(time.perf_counter() - t0, 3),
    }
    tmp = os.path.join(out_dir, "manifest.json.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=False, default=str)
        fh.write("\n")
    os.replace(tmp, os.path.join(out_dir, "manifest.json"))
    return manifest


def _public(n: dict[str, Any]) -> dict[str, Any]:
    return {k: n[k] for k in ("id", *LINEAGE)}


def _row(n: dict[str, Any], fmt: str) -> dict[str, Any]:
    msgs = [{"role": "user", "content": n["instruction"]}]
    if n.get("response") is not None:
        msgs.append({"role": "assistant", "content": n["response"]})
    rec = CONVERTERS[fmt]({"id": n["id"], "source": n["source"], "messages": msgs}, {"tools": False})
    return {"id": n["id"], **rec, **{k: n[k] for k in LINEAGE}}


def run_recipe(path: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run an evolve recipe: ``inputs`` (list), ``output`` (``{dir, format, file_format}`` or a folder),
    ``cache_dir``, ``on_error`` and ``evolve`` (the :class:`EvolveConfig` fields), checked by
    :mod:`siftkit.generate.recipe` (errors name the key). Relative paths are relative to the recipe.
    ``overrides`` replace keys of ``evolve``."""
    from .recipe import load_generate_recipe

    top, params = load_generate_recipe(path, "evolve", overrides)
    out = top["output"]
    return evolve(top["inputs"], out["dir"], format=out.get("format", "messages"),
                  file_format=out.get("file_format", "jsonl"), cache_dir=top["cache_dir"],
                  on_error=top["on_error"], **params)
