"""``diverseevol``: DiverseEvol's iterative schedule (Wu et al., 2023) on k-center greedy.

An initial random set (``initial_size``, 1,000 in the paper), then rounds that each add ``round_size``
(3,000 in the paper) points by k-center greedy (farthest from everything selected so far) until the
budget. In the paper the pool is re-embedded before every round with a model fine-tuned on everything
selected so far (the random initial set included): the base model's embeddings are only used when a round
starts from an empty selection (``initial_size: 0``).

Three modes:

- fixed embeddings (default; ``embedding`` spec): no retraining. Since k-center greedy depends only on the
  selected set, the rounds are then exactly one k-center run started from the random initial set (tested);
  the schedule matters only when the representation changes between rounds.
- ``retrain`` (recipes, CLI, Python): built in. Before each round, a fresh copy of ``retrain.model`` is
  fine-tuned on the current selection with the bench's training code (``siftkit.training``; settings
  ``retrain.train``, defaults ``siftkit.training.settings.TRAIN_DEFAULTS``), then every candidate is embedded with
  the fine-tuned model: mean-pooled last hidden states of the whole conversation by default (DiverseEvol's
  representation; ``retrain.embedding`` changes pooling, layer, segment, max_length, batch_size), with the
  causal-LM encoder of the ``embedding`` signal. Seeded: the same seed gives the same picks.
- ``reembed`` (Python only): a callable receiving the pool rows selected so far and returning new
  embeddings for the candidates (len(candidates) x d), called at the same points.

Shape of ``retrain``::

    retrain:
      model: HuggingFaceTB/SmolLM2-135M-Instruct    # hub name, folder or .gguf file (required)
      template: auto                                # training template (as the bench's `template`)
      train: {epochs: 1, lr: 2.0e-4}                # bench train settings
      embedding: {pooling: mean, layer: -1, segment: conversation, max_length: 512, batch_size: 16}
      device: auto

Memory: the fixed (or base) embeddings of the candidates are one float32 copy when it fits
``SIFTKIT_VECTOR_MEMORY`` (4 GiB); beyond, they stay in the float16 memory-map (``signals.vectors.RowsF32``)
and each round's k-center reads the not-yet-selected rows from it chunk by chunk (a view of those rows,
never a second copy), with the same picks. A re-embedding (``retrain``, ``reembed``) is the encoder's
output, already in memory; its not-yet-selected rows follow the same rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import progress
from ..errors import ConfigError
from ..registry import register_selector
from ..signals.vectors import RowsF32, candidate_rows, normalize_spec, rows_f32
from .base import SelectionContext, Selector, StepResult
from .kcenter import k_center_greedy

Reembed = Callable[[np.ndarray], np.ndarray]

RETRAIN_KEYS = ("model", "template", "train", "embedding", "device")
RETRAIN_EMBEDDING_KEYS = ("pooling", "layer", "segment", "max_length", "batch_size")
RETRAIN_EMBEDDING_DEFAULTS: dict[str, Any] = {"pooling": "mean", "layer": -1, "segment": "conversation",
                                              "max_length": 512, "batch_size": 16}


def _rest_rows(x: np.ndarray | RowsF32, rest: np.ndarray) -> np.ndarray | RowsF32:
    """The rows ``rest`` of ``x`` for a round's k-center: a view of a RowsF32 (nothing converted); of a float32
    array a copy under ``SIFTKIT_VECTOR_MEMORY``, else a RowsF32 view of it. The same bytes every way."""
    if isinstance(x, RowsF32):
        return x.take(rest)
    return candidate_rows(x, rest)


def diverse_evol(x: np.ndarray | RowsF32 | None, budget: int, initial: np.ndarray, round_size: int,
                 reembed: Callable[[np.ndarray], np.ndarray] | None = None,
                 n: int | None = None) -> tuple[np.ndarray, int]:
    """Positions into the candidates in selection order (``initial`` first) and the number of rounds run.

    ``reembed(selected_positions)`` returns the candidates' new embeddings before every round that starts
    from a non-empty selection; ``x`` (the fixed or base embeddings: a float32 array or a ``RowsF32`` view) is
    used otherwise, and may be None when ``reembed`` is given with a non-empty ``initial`` (then ``n`` gives
    the number of candidates)."""
    n = len(x) if x is not None else n
    if n is None:
        raise ValueError("diverse_evol: give x or n")
    budget = min(budget, n)
    selected = [int(i) for i in initial[:budget]]
    rounds = 0
    while len(selected) < budget:
        if selected and reembed is not None:
            x = np.asarray(reembed(np.asarray(selected, dtype=np.int64)), dtype=np.float32)
            if x.shape[0] != n:
                raise ConfigError(f"diverseevol: reembed returned {x.shape[0]} rows, expected {n}")
        if x is None:
            raise ValueError("diverse_evol: no embeddings for a round that starts from an empty selection")
        rest = np.setdiff1d(np.arange(n), np.asarray(selected, dtype=np.int64))
        init = x[selected] if selected else None
        take = min(round_size, budget - len(selected))
        picks = k_center_greedy(_rest_rows(x, rest), take, first=0 if init is None else None, initial=init)
        selected += rest[picks].tolist()
        rounds += 1
    return np.asarray(selected, dtype=np.int64), rounds


def retrain_options(spec: Any, where: str = "diverseevol: retrain") -> dict[str, Any]:
    """Validate and complete a ``retrain`` mapping (unknown keys are a ConfigError naming them)."""
    from ..scoring.templates import check_template
    from ..signals.embeddings import EmbeddingSignal
    from ..training.settings import check_model, train_options

    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping {{model: ..., train: {{...}}, embedding: {{...}}}}")
    unknown = sorted(set(spec) - set(RETRAIN_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {list(RETRAIN_KEYS)}")
    model = check_model(spec.get("model"), where)
    template = spec.get("template", "auto")
    try:
        check_template(template)
    except ConfigError as e:
        raise ConfigError(f"{where}: template: {e}") from None
    emb = spec.get("embedding") or {}
    if not isinstance(emb, dict):
        raise ConfigError(f"{where}: embedding must be a mapping with keys {list(RETRAIN_EMBEDDING_KEYS)}")
    unknown = sorted(set(emb) - set(RETRAIN_EMBEDDING_KEYS))
    if unknown:
        raise ConfigError(f"{where}: embedding: unknown key(s) {unknown}; allowed: {list(RETRAIN_EMBEDDING_KEYS)}")
    emb = {**RETRAIN_EMBEDDING_DEFAULTS, **emb}
    try:
        EmbeddingSignal(backend="causal-lm", model=model, **emb)
    except ConfigError as e:
        raise ConfigError(f"{where}: embedding: {e}") from None
    device = spec.get("device", "auto")
    if not isinstance(device, str):
        raise ConfigError(f"{where}: device must be a string ('auto', 'cpu', 'cuda', 'cuda:1')")
    return {"model": model, "template": template, "train": train_options(spec.get("train"), where),
            "embedding": emb, "device": device}


class Retrainer:
    """The built-in re-embedding: fine-tune a fresh copy of the base on the selection, embed the candidates."""

    def __init__(self, opts: dict[str, Any], texts: list[str], conversations: Callable[[np.ndarray], list],
                 seed: int, normalize: bool):
        self.opts, self.texts, self.conversations = opts, texts, conversations
        self.seed, self.normalize = int(seed), normalize
        self.log: list[dict[str, Any]] = []
        self._base: Any = None

    def base_spec(self) -> dict[str, Any]:
        """The ``embedding`` signal spec of the base model (round 1 when it starts from nothing)."""
        from ..scoring.model import resolve_source

        src, gguf = resolve_source(self.opts["model"])
        return {"name": "embedding", "backend": "causal-lm", "model": src, "gguf_file": gguf,
                "device": self.opts["device"], **self.opts["embedding"]}

    def signal(self) -> Any:
        from ..signals.embeddings import EmbeddingSignal

        return EmbeddingSignal(**{k: v for k, v in self.base_spec().items() if k != "name"})

    def base(self) -> Any:
        if self._base is None:
            from ..training.base import BaseLM

            self._base = BaseLM.load(self.opts["model"], template=self.opts["template"], device=self.opts["device"],
                                     dtype=self.opts["train"].get("dtype", "auto"))
        return self._base

    def __call__(self, sel: np.ndarray) -> np.ndarray:
        r = len(self.log) + 1
        progress.info(f"diverseevol: fine-tuning {self.opts['model']} on the {len(sel):,} selected "
                      f"(before round {r})")
        base = self.base()
        model, log = base.finetune(self.conversations(sel), self.opts["train"], seed=self.seed + r)
        progress.info(f"diverseevol: train loss {log['train_loss']:.4f} ({log['steps']} steps); "
                      f"re-embedding {len(self.texts):,} candidates")
        x = self.signal().encode_with(model, base.tokenizer, self.texts)
        del model
        self.log.append({"trained_on": len(sel), "examples": log["examples"], "steps": log["steps"],
                         "train_loss": log["train_loss"]})
        return rows_f32(x, np.arange(len(x)), normalize=self.normalize)


@register_selector("diverseevol")
class DiverseEvolSelect(Selector):
    role = "select"
    requires_for = "retraining between rounds"

    def requirements(self) -> dict[str, str]:
        if self.retrain is None:
            return {}
        return {m: self.requires_for for m in ("torch", "transformers", "trl", "peft", "datasets")}

    def __init__(self, initial_size: int = 1000, round_size: int = 3000,
                 embedding: dict[str, Any] | str | None = None, normalize: bool = True,
                 reembed: Reembed | None = None, retrain: dict[str, Any] | None = None):
        if int(initial_size) < 0 or int(round_size) < 1:
            raise ConfigError(f"diverseevol: need initial_size >= 0 and round_size >= 1, got "
                              f"{initial_size}, {round_size}")
        if reembed is not None and not callable(reembed):
            raise ConfigError("diverseevol: reembed must be a callable (Python API)")
        if reembed is not None and retrain is not None:
            raise ConfigError("diverseevol: give reembed (a Python callable) or retrain (built in), not both")
        self.initial_size, self.round_size = int(initial_size), int(round_size)
        self.embedding_given = embedding is not None
        self.embedding, self.normalize, self.reembed = normalize_spec(embedding), bool(normalize), reembed
        self.retrain = None if retrain is None else retrain_options(retrain)

    def config(self) -> dict[str, Any]:
        return {"initial_size": self.initial_size, "round_size": self.round_size, "embedding": self.embedding,
                "normalize": self.normalize, "reembed": getattr(self.reembed, "__name__", None),
                "retrain": self.retrain}

    def run(self, ctx: SelectionContext, candidates: np.ndarray, budget: int | None) -> StepResult:
        if budget is None:
            raise ConfigError("diverseevol is a budgeted selector: give it a budget")
        candidates = np.asarray(candidates, dtype=np.int64)
        rng = ctx.rng("diverseevol")
        init = rng.choice(len(candidates), min(self.initial_size, budget, len(candidates)), replace=False)
        hook: Callable[[np.ndarray], np.ndarray] | None = None
        calls: list[int] = []
        retrainer: Retrainer | None = None
        spec = self.embedding
        if self.retrain is not None:
            import pyarrow as pa

            from ..signals.segments import flatten

            msgs = ctx.pool.column("messages")
            texts = flatten(ctx.pool.select(["messages"]).take(pa.array(candidates, pa.int64()))).texts(
                self.retrain["embedding"]["segment"])
            retrainer = Retrainer(self.retrain, texts,
                                  lambda sel: msgs.take(pa.array(candidates[sel], pa.int64())).to_pylist(),
                                  seed=int(ctx.rng("diverseevol:train").integers(2**31 - 1)),
                                  normalize=self.normalize)
            hook = retrainer
            if not self.embedding_given:
                spec = retrainer.base_spec()
        elif self.reembed is not None:
            user_hook = self.reembed

            def hook(sel: np.ndarray) -> np.ndarray:
                calls.append(len(sel))
                progress.info(f"diverseevol: re-embedding after {len(sel):,} selected")
                return rows_f32(np.asarray(user_hook(candidates[sel])), np.arange(len(candidates)),
                                normalize=self.normalize)

        # the fixed (or base) embeddings are needed unless every round starts from a re-embedding
        x = None if (hook is not None and len(init)) else \
            candidate_rows(ctx.embeddings(spec), candidates, normalize=self.normalize)
        pos, rounds = diverse_evol(x, budget, init, self.round_size, hook, n=len(candidates))
        kept = candidates[pos]
        details: dict[str, Any] = {"initial": len(init), "rounds": rounds,
                                   "retrained": bool(calls or (retrainer is not None and retrainer.log))}
        if retrainer is not None:
            details["train_loss"] = [r["train_loss"] for r in retrainer.log]
            details["trained_on"] = [r["trained_on"] for r in retrainer.log]
        return StepResult(kept=kept, dropped={"over_budget": int(len(candidates) - len(kept))}, details=details)
