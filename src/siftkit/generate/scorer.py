"""DEITA's scorer pipeline: rank each seed's evolved variants in one judge call, then fine-tune a causal LM
to emit the score, so the ``deita`` signal can load it by path.

``rank_variants`` reads an ``evolve`` output (``messages`` format, lineage columns), groups the records by
``root_id`` and asks the judge, in one request per seed, for a score 1-6 per variant (complexity of the
instruction, or quality of the response), as DEITA ranks the variants of a seed together. It writes
``pairs.jsonl`` (``id, root_id, round, operation, instruction, response, score``) and a manifest with the
groups kept and failed by reason. ``train_scorer`` fine-tunes a base model with siftkit's training code
(``training.train_cell``) on the prompt format the ``deita`` signal reads (``scoring.deita``'s
``COMPLEXITY_PROMPT`` / ``QUALITY_PROMPT``, raw text) followed by the score digit, the loss on that digit
only, and saves a plain Hugging Face folder: ``{"name": "deita", "complexity_model": FOLDER}``.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from typing import Any

import numpy as np
import orjson

from .._version import __version__
from ..errors import ConfigError, EndpointError
from ..fs import local_folder
from ..io.readers import jsonl_values
from ..llm.client import Client, Endpoint
from ..llm.runs import open_cache
from ..llm.structured import answer_text
from ..llm.usage import Usage

KINDS = ("complexity", "quality")
LO, HI = 1, 6
RANK_SYSTEM = "You compare variants of one training example and score each of them."
RANK_TASK = {
    "complexity": "Below are {n} versions of a request, numbered. Score how complex and demanding each "
                  "request is, from 1 (trivial) to 6 (very demanding), comparing them with each other so "
                  "that a harder version gets a higher score.",
    "quality": "Below are {n} answers to the same request, numbered. Score the quality of each answer "
               "(helpful, correct, relevant, detailed), from 1 (poor) to 6 (excellent), comparing them with "
               "each other so that a better answer gets a higher score.",
}


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    rows = []
    for i, r in jsonl_values(path):
        for k in ("id", "root_id", "messages"):
            if not isinstance(r, dict) or k not in r:
                raise ConfigError(f"{path}:{i}: field {k!r} missing (rank_variants reads an evolve output "
                                  "in the messages format)")
        rows.append(r)
    return rows


def _schema(n: int) -> dict[str, Any]:
    return {"type": "object", "properties": {"scores": {"type": "array", "minItems": n, "maxItems": n,
                                                        "items": {"type": "integer", "minimum": LO,
                                                                  "maximum": HI}}},
            "required": ["scores"], "additionalProperties": False}


def parse_scores(text: str, n: int) -> tuple[list[int] | None, str]:
    """The ``n`` scores of a ranking answer, or (None, reason): invalid_json / bad_schema."""
    try:
        obj = json.loads(text.strip())
    except json.JSONDecodeError:
        return None, "invalid_json"
    s = obj.get("scores") if isinstance(obj, dict) else None
    if not isinstance(s, list) or len(s) != n or not all(isinstance(x, int) and not isinstance(x, bool)
                                                          and LO <= x <= HI for x in s):
        return None, "bad_schema"
    return s, ""


def rank_body(kind: str, items: list[str], max_tokens: int) -> dict[str, Any]:
    n = len(items)
    listing = "\n\n".join(f"[{i + 1}]\n{t}" for i, t in enumerate(items))
    user = (RANK_TASK[kind].format(n=n) + "\n\n" + listing + "\n\nReply with only this JSON object: "
            + '{"scores": [' + ", ".join(f"<score of {i + 1}>" for i in range(n)) + "]}")
    return {"messages": [{"role": "system", "content": RANK_SYSTEM}, {"role": "user", "content": user}],
            "temperature": 0.0, "seed": 0, "max_tokens": int(max_tokens),
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "scores", "schema": _schema(n), "strict": True}}}


def _pair(r: dict[str, Any]) -> tuple[str, str]:
    u = next((m["content"] for m in r["messages"] if m["role"] == "user"), "")
    a = next((m["content"] for m in r["messages"] if m["role"] == "assistant"), "")
    return u, a


def rank_variants(evolved: str, out_dir: str, *, endpoint: str, model: str = "", kind: str = "complexity",
                  cache_dir: str = ".siftkit", max_tokens: int = 64, api_key_env: str | None = None,
                  concurrency: int = 8, max_retries: int = 4, timeout: float = 60.0) -> dict[str, Any]:
    """Score the variants of each seed of ``evolved`` (an evolve output's ``evolved.jsonl``) in one judge
    call per seed; write ``out_dir/pairs.jsonl`` and ``out_dir/manifest.json``; return the manifest."""
    if kind not in KINDS:
        raise ConfigError(f"rank: kind must be one of {KINDS}, got {kind!r}")
    t0 = time.perf_counter()
    rows = _read_jsonl(evolved)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[str(r["root_id"])].append(r)
    ep = Endpoint(url=endpoint, model=model, api_key_env=api_key_env, timeout=timeout, max_retries=max_retries,
                  concurrency=concurrency)
    ep.ready("rank", need_url=True)
    usage = Usage()
    client = Client(ep, open_cache(local_folder(cache_dir, "llm")), usage, tag=f"rank-{kind}", who="rank")
    roots = list(groups)
    texts = [[_pair(r)[0] if kind == "complexity" else _pair(r)[1] for r in groups[k]] for k in roots]
    outs = client.complete([rank_body(kind, t, max_tokens) for t in texts])
    if any(o.reason.startswith("unavailable:") for o in outs):
        raise EndpointError(f"rank: requests to {endpoint} failed after {max_retries} retries; the answers "
                            "received are cached: rerun to resume")
    pairs, failed = [], Counter()
    for k, o in zip(roots, outs):
        if o.response is None:
            failed["request_failed"] += 1
            continue
        text, _ = answer_text(o.response)
        scores, why = parse_scores(text, len(groups[k]))
        if scores is None:
            failed[why] += 1
            continue
        for r, s in zip(groups[k], scores):
            u, a = _pair(r)
            pairs.append({"id": r["id"], "root_id": k, "round": r.get("round"), "operation": r.get("operation"),
                          "instruction": u, "response": a, "score": int(s)})
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "pairs.jsonl"), "wb") as fh:
        fh.writelines(orjson.dumps(p, option=orjson.OPT_APPEND_NEWLINE) for p in pairs)
    manifest = {"command": "rank", "siftkit_version": __version__, "kind": kind, "model": ep.model,
                "counts": {"records": len(rows), "groups": len(roots), "groups_kept": len(roots) - sum(failed.values()),
                           "groups_failed": dict(sorted(failed.items())), "pairs": len(pairs)},
                "usage": usage.snapshot(), "seconds": round(time.perf_counter() - t0, 3)}
    with open(os.path.join(out_dir, "manifest.json"), "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2)
        fh.write("\n")
    return manifest


def train_scorer(pairs: str, base_model: str, out_dir: str, *, kind: str = "complexity",
                 train: dict[str, Any] | None = None, seed: int = 0, device: str = "auto") -> dict[str, Any]:
    """Fine-tune ``base_model`` (hub name, folder or .gguf) to emit the score digit after the ``deita``
    signal's prompt; save the model and tokenizer to ``out_dir`` (load it with ``complexity_model=out_dir``
    or ``quality_model=out_dir``). ``train``: siftkit's train settings (docs/bench.md); default full
    fine-tuning. Returns the training log (also ``out_dir/scorer.json``)."""
    from ..scoring.base import digit_ids
    from ..scoring.deita import COMPLEXITY_PROMPT, QUALITY_PROMPT
    from ..scoring.rating import _encode
    from ..training.base import BaseLM
    from ..training.settings import train_settings
    from ..training.train import Examples, train_cell

    if kind not in KINDS:
        raise ConfigError(f"train-scorer: kind must be one of {KINDS}, got {kind!r}")
    data = []
    with open(pairs, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                r = json.loads(line)
                s = r.get("score")
                if not isinstance(s, int) or not LO <= s <= HI:
                    raise ConfigError(f"{pairs}:{i}: score must be an integer {LO}-{HI}, got {s!r}")
                data.append(r)
    if not data:
        raise ConfigError(f"{pairs}: no (prompt, score) pairs")
    settings = train_settings({"mode": "full", **(train or {})}, "train-scorer")
    base = BaseLM.load(base_model, device=device)
    tok = base.tokenizer
    digits = digit_ids(tok, range(LO, HI + 1))
    fmt = COMPLEXITY_PROMPT if kind == "complexity" else QUALITY_PROMPT
    rows, truncated = [], 0
    max_len = int(settings["max_length"])
    for r in data:
        fields = {"instruction": r["instruction"]} if kind == "complexity" else \
            {"instruction": r["instruction"], "response": r["response"]}
        ids = _encode(fmt.format(**fields), tok, "raw")
        if len(ids) + 1 > max_len:
            ids, truncated = ids[-(max_len - 1):], truncated + 1
        full = np.append(ids, digits[r["score"] - LO])
        mask = np.zeros(len(full), dtype=int)
        mask[-1] = 1                           # the loss is on the score digit only
        rows.append({"input_ids": full.tolist(), "assistant_masks": mask.tolist()})
    ex = Examples(rows, 0, truncated, list(range(len(rows))))
    import copy
    import tempfile

    with tempfile.TemporaryDirectory(prefix="siftkit-scorer-") as work:
        model, log = train_cell(copy.deepcopy(base.lm.model), tok, ex, {**settings, "save_model": False}, work,
                                seed=int(seed), device=base.lm.device)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    info = {"kind": kind, "base_model": base_model, "pairs": len(rows), "truncated": truncated,
            "train_loss": log["train_loss"], "steps": log["steps"], "seed": seed,
            "settings": {k: v for k, v in settings.items()}, "score_digits": [int(d) for d in digits]}
    with open(os.path.join(out_dir, "scorer.json"), "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=2, default=str)
        fh.write("\n")
    return info
