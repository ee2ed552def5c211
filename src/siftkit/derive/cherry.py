"""Cherry LLM's "brief experience" model (Li et al., 2023): the model IFD is scored with.

Before scoring IFD, Cherry gives the base model a brief experience of the pool:

1. prompt perplexity of every record with the base model (the ``lm_loss`` signal's ``lm_prompt_ppl``:
   perplexity of the content before the last assistant turn, computed and cached like any signal;
   ``prompt_ppl: whole`` takes Cherry's definition instead, every token of the templated prompt);
2. k-means over prompt embeddings (default: the base model's mean-pooled last hidden states of the query
   segment, the ``embedding`` signal with ``backend: causal-lm``; cached), ``clusters`` (100) clusters,
   spherical on L2-normalised vectors (``siftkit.selectors.kmeans.kmeans_labels``; read from the float16
   vector cache chunk by chunk beyond ``SIFTKIT_VECTOR_MEMORY``, as the ``kmeans`` selector does);
3. in each cluster, the records whose prompt perplexity lies between the cluster's ``band`` percentiles
   (25th and 75th, inclusive, as the published code computes them per cluster), and of those at most
   ``per_cluster`` (10): all when there are fewer, otherwise evenly spaced ranks in perplexity order;
4. a short fine-tune of a fresh copy of the base on those records (``siftkit.training``, the bench training,
   settings ``train``), LoRA merged, saved as a plain model folder with its tokenizer.

The folder is keyed by a fingerprint of every input (pool ids, base scoring and embedding signals, clusters,
per_cluster, band, train settings, seed, template): a rerun with the same inputs reuses it without
recomputing anything. ``brief_experience.json`` in it records the picks and the training log.

In a recipe, the experienced model is a derived model (``siftkit.derive``) that an ``lm_loss`` signal names::

    models:
      experienced: {derive: cherry-brief-experience, base: Qwen/Qwen2.5-0.5B, clusters: 100, per_cluster: 10}
    signals:
      - {name: lm_loss, model: experienced}

(``base``: the model to start from; ``template``; ``lm_loss``: further parameters of the base ``lm_loss``
signal that gives the prompt perplexity.) The older spelling, ``brief_experience`` as an option of an
``lm_loss`` signal (or of the ``cherry-ifd`` preset), keeps working: the signal is then computed with the
experienced model instead of ``model``::

    signals:
      - {name: lm_loss, model: Qwen/Qwen2.5-0.5B, brief_experience: {clusters: 100, per_cluster: 10}}

Records without a prompt perplexity (no text before the last assistant turn, or unscorable) are not
clustered. Differences from the published code: k-means is spherical (siftkit's faiss k-means) where Cherry
ran Euclidean scikit-learn k-means on raw states; the band also applies to clusters smaller than
``per_cluster`` (the published code takes them whole); inside the band siftkit spaces the picks evenly in
perplexity order where the published code takes every (m // 10)-th record in file order.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from .. import progress
from ..errors import ConfigError
from ..fs import local_folder
from ..registry import register_derivation
from .base import Derivation

VERSION = "1"
BRIEF_KEYS = ("clusters", "per_cluster", "band", "train", "embedding", "seed", "prompt_ppl")
BRIEF_DEFAULTS: dict[str, Any] = {"clusters": 100, "per_cluster": 10, "band": [25.0, 75.0], "train": None,
                                  "embedding": None, "seed": 0}
MARKER = "brief_experience.json"
# the prompt perplexity that picks the band: "content" (siftkit's: the contents before the last assistant
# turn) or "whole" (Cherry's: every token of the templated prompt); the lm_loss signal's prompt_ppl
PROMPT_PPL = ("content", "whole")


def _pos_int(v: Any, where: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ConfigError(f"{where} must be an integer >= 1, not {v!r}")
    return v


def brief_options(opts: Any, where: str = "brief_experience") -> dict[str, Any]:
    """Validated, completed options (``True`` or ``{}``: the published defaults); unknown keys are an error
    naming them. ``train`` comes back as full bench train settings."""
    from ..signals.vectors import normalize_spec
    from ..training.settings import train_options

    if opts is True or opts is None:
        opts = {}
    if not isinstance(opts, dict):
        raise ConfigError(f"{where}: expected a mapping like {{clusters: 100, per_cluster: 10, band: [25, 75], "
                          f"train: {{...}}}}, not {opts!r}")
    unknown = sorted(set(opts) - set(BRIEF_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {list(BRIEF_KEYS)}")
    out = {**BRIEF_DEFAULTS, **opts}
    _pos_int(out["clusters"], f"{where}.clusters")
    _pos_int(out["per_cluster"], f"{where}.per_cluster")
    band = out["band"]
    if not (isinstance(band, (list, tuple)) and len(band) == 2
            and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in band)
            and 0 <= band[0] <= band[1] <= 100):
        raise ConfigError(f"{where}.band must be two percentiles [low, high] with 0 <= low <= high <= 100, "
                          f"not {band!r}")
    out["band"] = [float(band[0]), float(band[1])]
    if not isinstance(out["seed"], int) or isinstance(out["seed"], bool):
        raise ConfigError(f"{where}.seed must be an integer, not {out['seed']!r}")
    if "prompt_ppl" in out and out["prompt_ppl"] not in PROMPT_PPL:   # absent: "content" (siftkit's)
        raise ConfigError(f"{where}.prompt_ppl must be one of {', '.join(PROMPT_PPL)}, not {out['prompt_ppl']!r}")
    out["train"] = train_options(out["train"], where)
    if out["embedding"] is not None:
        spec = normalize_spec(out["embedding"])
        from ..signals.compute import build_signal

        try:
            sig = build_signal(spec)
        except ConfigError as e:
            raise ConfigError(f"{where}.embedding: {e}") from None
        if sig.kind != "vector":
            raise ConfigError(f"{where}.embedding: signal {sig.name!r} is not a vector signal")
        out["embedding"] = spec
    return out


def check_signal_spec(spec: Any, where: str) -> Any:
    """A recipe signal with ``brief_experience``: only ``lm_loss`` takes it; its options validated now."""
    if not isinstance(spec, dict) or "brief_experience" not in spec:
        return spec
    if spec.get("name") != "lm_loss":
        raise ConfigError(f"{where}: brief_experience is an option of the lm_loss signal, not of "
                          f"{spec.get('name')!r}")
    from ..training.settings import check_model

    check_model(spec.get("model"), where)
    return {**spec, "brief_experience": brief_options(spec["brief_experience"], f"{where}.brief_experience")}


def prompt_clusters(vectors: np.ndarray, rows: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    """Per pool row (``vectors``: the pool's N x d embeddings, float16 memory-map) its cluster under
    spherical k-means of the L2-normalised rows ``rows`` (``clusters`` clusters, ``seed``), -1 for the other
    rows. The rows are one float32 copy when it fits ``SIFTKIT_VECTOR_MEMORY`` (4 GiB), else read from the
    memory-map chunk by chunk (``signals.vectors.candidate_rows``): the same labels either way."""
    from ..selectors.kmeans import kmeans_labels
    from ..signals.vectors import candidate_rows

    lab, _ = kmeans_labels(candidate_rows(vectors, rows, normalize=True), clusters, seed)
    labels = np.full(len(vectors), -1, dtype=np.int64)
    labels[rows] = lab
    return labels


def band_picks(labels: np.ndarray, ppl: np.ndarray, per_cluster: int, band: Sequence[float]) -> np.ndarray:
    """Positions picked: in each cluster (``labels`` >= 0), the records whose ``ppl`` lies between the
    cluster's ``band`` percentiles (inclusive), then ``per_cluster`` of them at evenly spaced ranks in
    ``ppl`` order (ties by position), all of them when there are fewer. Sorted ascending."""
    labels = np.asarray(labels)
    ppl = np.asarray(ppl, dtype=np.float64)
    out: list[np.ndarray] = []
    for c in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == c)
        p = ppl[members]
        lo, hi = np.percentile(p, band)
        inside = members[(p >= lo) & (p <= hi)]
        inside = inside[np.lexsort((inside, ppl[inside]))]
        m = len(inside)
        if m > per_cluster:
            inside = inside[((np.arange(per_cluster) + 0.5) * m / per_cluster).astype(np.int64)]
        out.append(inside)
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)


@dataclass
class BriefExperience:
    model: str                        # folder: the merged fine-tuned model and its tokenizer
    ids: list[str]                    # pool ids of the records it was trained on, pool order
    fingerprint: str
    reused: bool                      # True: an existing folder with the same fingerprint was used
    info: dict[str, Any]              # the contents of brief_experience.json
    labels: np.ndarray | None = None  # per pool row: its k-means cluster, -1 if not clustered (None if reused)
    prompt_ppl: np.ndarray | None = None  # per pool row: the base model's prompt perplexity (None if reused)


def _specs(model: str, template: str, lm_loss: dict[str, Any], embedding: dict[str, Any] | None
           ) -> tuple[dict[str, Any], dict[str, Any]]:
    from ..scoring.model import resolve_source

    base = {"name": "lm_loss", **lm_loss, "model": model, "template": template}
    if embedding is None:
        src, gguf = resolve_source(model, lm_loss.get("gguf_file")) if model.lower().endswith(".gguf") \
            else (model, lm_loss.get("gguf_file"))
        embedding = {"name": "embedding", "backend": "causal-lm", "model": src, "gguf_file": gguf,
                     "pooling": "mean", "layer": -1, "segment": "query"}
        if "device" in lm_loss:
            embedding["device"] = lm_loss["device"]
    return base, embedding


def _as_table(pool: Any) -> pa.Table:
    from ..io.pool import Pool, read_pool

    if isinstance(pool, Pool):
        return pool.table
    if isinstance(pool, pa.Table):
        return pool
    return read_pool(pool).table


def brief_experience(pool: Any, model: str, *, clusters: int = 100, per_cluster: int = 10,
                     band: Sequence[float] = (25, 75), train: dict[str, Any] | None = None,
                     embedding: dict[str, Any] | str | None = None, seed: int = 0, template: str = "auto",
                     lm_loss: dict[str, Any] | None = None, out: str | None = None, cache_dir: str = ".siftkit",
                     workers: int = 1, engine: str = "local", prompt_ppl: str = "content") -> BriefExperience:
    """Build (or reuse) Cherry's brief-experience model for ``pool`` (a Pool, a pool table or ``read_pool`` inputs).

    ``model``: the base (hub name, folder or ``.gguf``); ``lm_loss``: extra parameters of the base
    ``lm_loss`` signal that gives the prompt perplexity (e.g. ``max_length``, ``dtype``, ``device``);
    ``embedding``: an embedding spec for the clustering (default: the base model's mean-pooled last hidden
    states of the query); ``prompt_ppl``: ``"content"`` (siftkit's: perplexity of the contents before the last
    assistant turn) or ``"whole"`` (Cherry's: of the whole templated prompt); ``train``: bench train settings; ``out``: the model folder (default:
    ``<cache_dir>/models/cherry-brief/<fingerprint>``). Score IFD with ``BriefExperience.model``."""
    from ..signals.compute import build_signal, compute_signals

    opts = brief_options({"clusters": clusters, "per_cluster": per_cluster, "band": list(band), "train": train,
                          "embedding": embedding, "seed": seed, "prompt_ppl": prompt_ppl})
    from ..training.settings import check_model

    check_model(model, "brief_experience")
    lm_loss = dict(lm_loss or {})
    for k in ("name", "model", "template", "brief_experience"):
        if k in lm_loss:
            raise ConfigError(f"brief_experience: lm_loss: {k!r} is set by brief_experience itself")
    if prompt_ppl != "content":                      # the default leaves the base signal (and its cache) as before
        lm_loss["prompt_ppl"] = prompt_ppl
    table = _as_table(pool)
    ids = table.column("id").to_pylist()
    base_spec, emb_spec = _specs(model, template, lm_loss, opts["embedding"])
    base_sig, emb_sig = build_signal(base_spec), build_signal(emb_spec)
    what = {"version": VERSION, "pool": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
            "lm_loss": base_sig.fingerprint(), "embedding": emb_sig.fingerprint(),
            **{k: opts[k] for k in ("clusters", "per_cluster", "band", "train", "seed")}}
    fp = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]
    folder = out or local_folder(cache_dir, "models", "cherry-brief", fp)
    marker = os.path.join(folder, MARKER)
    if os.path.isfile(marker):
        with open(marker, encoding="utf-8") as fh:
            info = json.load(fh)
        if info.get("fingerprint") != fp:
            raise ConfigError(f"{folder} holds a brief-experience model built from other inputs (fingerprint "
                              f"{info.get('fingerprint')} != {fp}): use another folder or delete it")
        progress.info(f"brief experience: reusing {folder}")
        return BriefExperience(folder, info["trained_ids"], fp, True, info)
    if os.path.isdir(folder) and os.listdir(folder):
        raise ConfigError(f"{folder} exists and is not a brief-experience model folder (no {MARKER})")
    t0 = time.perf_counter()

    # 1. prompt perplexity with the base model (cached signal)
    scores = compute_signals(table, [base_sig], cache_dir, workers=workers, engine=engine)
    ppl = np.asarray(scores.column(f"{base_sig.prefix}_prompt_ppl").to_numpy(zero_copy_only=False), np.float64)
    rows = np.flatnonzero(np.isfinite(ppl))
    if not len(rows):
        raise ConfigError("brief_experience: no record has a prompt perplexity (each needs text before its "
                          "last assistant turn)")
    # 2. k-means over prompt embeddings (cached vectors)
    from ..signals.vectors import load_or_compute_vectors

    vectors = load_or_compute_vectors(table, emb_sig, cache_dir, workers=workers, engine=engine)
    labels = prompt_clusters(vectors, rows, opts["clusters"], opts["seed"])
    # 3. the band, per cluster
    picks = band_picks(labels, ppl, opts["per_cluster"], opts["band"])
    progress.info(f"brief experience: {len(picks):,} records from {int(labels.max()) + 1} clusters "
                  f"(prompt-perplexity band {opts['band'][0]:g}-{opts['band'][1]:g}th percentile)")
    # 4. fine-tune a fresh copy of the base on them, save the merged model
    from ..training.base import BaseLM

    base = BaseLM.load(model, template=template, device=lm_loss.get("device", "auto"),
                       dtype=opts["train"].get("dtype", "auto"), gguf_file=lm_loss.get("gguf_file"),
                       trust_remote_code=bool(lm_loss.get("trust_remote_code", False)),
                       revision=lm_loss.get("revision"))
    convs = table.column("messages").take(pa.array(picks, pa.int64())).to_pylist()
    tuned, log = base.finetune(convs, opts["train"], seed=opts["seed"])
    trained = picks[np.asarray(log["kept"], dtype=np.int64)]
    info = {"fingerprint": fp, "version": VERSION, "base_model": model, "template": template,
            "lm_loss": base_spec, "embedding": emb_spec, **{k: opts[k] for k in ("clusters", "per_cluster",
                                                                                  "band", "train", "seed")},
            "clusters_used": int(labels.max()) + 1, "records": len(ids), "clustered": len(rows),
            "picked": len(picks), "trained_ids": [ids[i] for i in trained.tolist()],
            "picks": [{"id": ids[i], "cluster": int(labels[i]), "prompt_ppl": float(ppl[i])} for i in picks.tolist()],
            "train_log": {k: log[k] for k in ("examples", "skipped", "truncated", "loss_tokens", "steps",
                                              "train_loss", "train_runtime_s")},
            "seconds": round(time.perf_counter() - t0, 2)}
    tmp = f"{folder.rstrip(os.sep)}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tuned.save_pretrained(tmp)
    base.tokenizer.save_pretrained(tmp)
    with open(os.path.join(tmp, MARKER), "w", encoding="utf-8") as fh:   # written last: the folder is complete
        json.dump(info, fh, indent=1, default=str)
    if os.path.isdir(folder):
        os.rmdir(folder)                                                  # empty (checked above)
    os.makedirs(os.path.dirname(os.path.abspath(folder)), exist_ok=True)
    os.rename(tmp, folder)
    progress.info(f"brief experience: trained on {len(trained):,} records (loss {log['train_loss']:.4f}) -> {folder}")
    return BriefExperience(folder, info["trained_ids"], fp, False, info, labels, ppl)


LM_LOSS_SET = ("name", "model", "template", "brief_experience")   # keys brief_experience sets on the base lm_loss


@register_derivation("cherry-brief-experience")
class CherryBriefExperience(Derivation):
    """``{derive: cherry-brief-experience, base: MODEL, template: auto, lm_loss: {...}, clusters: 100,
    per_cluster: 10, band: [25, 75], train: {...}, embedding: ..., seed: 0}``: ``brief_experience`` above."""

    # a k-means over static embeddings and a short fine-tune of the base
    needs: ClassVar[dict[str, str]] = {
        "faiss": "k-means for brief_experience",
        **{m: "brief fine-tuning" for m in ("torch", "transformers", "trl", "peft", "datasets")}}

    def __init__(self, base: str | None = None, template: str = "auto", lm_loss: dict[str, Any] | None = None,
                 **opts: Any):
        if not isinstance(base, str) or not base:
            raise ConfigError("'base' is required: the model to start from (a hub name, a local folder or a "
                              ".gguf file)")
        self.base = base
        if not isinstance(template, str):
            raise ConfigError(f"template must be a template name, not {template!r}")
        if lm_loss is not None and (not isinstance(lm_loss, dict) or set(LM_LOSS_SET) & set(lm_loss)):
            raise ConfigError("lm_loss must be a mapping of further lm_loss parameters (max_length, dtype, "
                              f"device, ...), without {', '.join(LM_LOSS_SET)}")
        self.template, self.lm_loss = template, dict(lm_loss or {})
        self.opts = brief_options(opts, "cherry-brief-experience")

    def config(self) -> dict[str, Any]:
        return {"base": self.base, "template": self.template, "lm_loss": self.lm_loss, **self.opts}

    def build(self, pool: Any, *, cache_dir: str, workers: int = 1, engine: str = "local") -> str:
        return brief_experience(pool, self.base, template=self.template, lm_loss=self.lm_loss, cache_dir=cache_dir,
                                workers=workers, engine=engine, **self.opts).model

    @classmethod
    def check_signal(cls, spec: dict[str, Any], where: str) -> dict[str, Any]:
        return check_signal_spec(spec, where)

    @classmethod
    def from_signal(cls, spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``{name: lm_loss, model: M, brief_experience: {...}, **extra}`` -> the derivation's parameters and
        the ``lm_loss`` signal scored with the experienced model (without ``gguf_file`` / ``revision``,
        which belong to the base)."""
        extra = {k: v for k, v in spec.items() if k not in LM_LOSS_SET}
        params = {"base": spec["model"], "template": spec.get("template", "auto"), "lm_loss": extra,
                  **spec["brief_experience"]}
        scored = {k: v for k, v in spec.items() if k not in ("brief_experience", "gguf_file", "revision")}
        return params, scored
