"""``less``: LESS (Xia et al., 2024), targeted selection by gradient influence.

1. Warm-up (:mod:`siftkit.less.warmup`): LoRA on a seeded random ``warmup_fraction`` of the candidates (5%),
   one checkpoint per epoch with its Adam moments and mean learning rate (reused from the cache on reruns;
   ``warmup=`` a finished warm-up folder skips it).
2. Per checkpoint, every candidate's feature (the ``less_grads`` vector signal, cached and resumable; only
   the candidates still in play after earlier steps are differentiated): the
   per-sample LoRA gradient on the trained tokens, as the Adam update direction from the checkpoint's
   moments, Rademacher-projected to ``dim`` (8192) and L2-normalised.
3. Target examples (``targets``: files or folders read with ``siftkit.io.read_pool``; one task per input
   source, or per ``task_by`` column): the same features with plain (SGD) gradients.
4. Score of a candidate: ``sum_c lr_c * mean_{t in task} cos(g_c(x), g_c(t))``, the learning-rate-weighted sum
   over checkpoints of the mean cosine with the task's examples, then the **max over tasks**. The top
   ``budget`` scores are selected (ties by pool order).

Scores are accumulated chunk by chunk of candidates (``chunk`` x dim float32 at a time); the N x Q
similarity matrix is never held. Records with no trained token have no gradient: dropped as ``no_gradient``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import progress
from ..errors import ConfigError
from ..registry import register_selector
from .base import SelectionContext, Selector, StepResult, read_targets


def less_scores(features: list[np.ndarray], targets: list[np.ndarray], lrs: list[float], task_of: np.ndarray,
                rows: np.ndarray, chunk: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """(score per row, per-task scores rows x tasks) for pool rows ``rows``. ``features[c]``: N x d (any
    float dtype, normalised), ``targets[c]``: Q x d normalised float32, per checkpoint ``c``."""
    tasks = list(dict.fromkeys(task_of.tolist()))
    onehot = np.zeros((len(task_of), len(tasks)), dtype=np.float64)
    for j, tk in enumerate(tasks):
        members = task_of == tk
        onehot[members, j] = 1.0 / members.sum()        # mean within the task
    per_task = np.zeros((len(rows), len(tasks)), dtype=np.float64)
    with progress.stage("less: scores", total=len(rows) * len(features)) as st:
        for x, t, lr in zip(features, targets, lrs):
            for s in range(0, len(rows), chunk):
                block = np.asarray(x[rows[s:s + chunk]], dtype=np.float32)
                per_task[s:s + chunk] += lr * ((block @ t.T).astype(np.float64) @ onehot)
                st.update(len(block))
    return per_task.max(axis=1), per_task


@register_selector("less")
class LESSSelect(Selector):
    role = "select"
    requires = ("torch", "transformers", "peft", "trl", "datasets")
    requires_for = "LESS warm-up and gradients"

    def __init__(self, model: str | None = None, targets: str | list[str] | None = None, task_by: str = "source",
                 warmup_fraction: float = 0.05, warmup: str | None = None, train: dict[str, Any] | None = None,
                 dim: int = 8192, proj_seed: int = 0, projection: str = "pcg64", template: str = "auto",
                 max_length: int = 2048, token_budget: int = 4096, max_batch: int = 16, gguf_file: str | None = None,
                 device: str = "auto", dtype: str = "auto", chunk: int = 16384):
        if not model:
            raise ConfigError("less: 'model' (the base model to warm up and take gradients of) is required")
        if not targets:
            raise ConfigError("less: 'targets' must name file(s) or folder(s) of target-task conversations")
        if not 0 < float(warmup_fraction) <= 1:
            raise ConfigError(f"less: warmup_fraction must be in (0, 1], got {warmup_fraction}")
        if train is not None and not isinstance(train, dict):
            raise ConfigError("less: train must be a mapping of bench train settings")
        from ..less.warmup import less_train_settings

        self.settings = less_train_settings(train)          # validated now, before any work
        self.model, self.gguf_file, self.train = model, gguf_file, dict(train or {})
        self.targets = [targets] if isinstance(targets, str) else list(targets)
        self.task_by, self.warmup_fraction, self.warmup = task_by, float(warmup_fraction), warmup
        self.dim, self.proj_seed, self.template, self.max_length = int(dim), int(proj_seed), template, int(max_length)
        self.token_budget, self.max_batch, self.device, self.dtype = int(token_budget), int(max_batch), device, dtype
        from ..less.projection import KINDS

        if projection not in KINDS:
            raise ConfigError(f"less: projection must be one of {', '.join(KINDS)}, got {projection!r}")
        self.chunk, self.projection = int(chunk), projection

    def config(self) -> dict[str, Any]:
        return {"model": self.model, "gguf_file": self.gguf_file, "targets": self.targets, "task_by": self.task_by,
                "warmup_fraction": self.warmup_fraction, "warmup": self.warmup, "train": self.settings,
                "dim": self.dim, "proj_seed": self.proj_seed, "projection": self.projection,
                "template": self.template, "max_length": self.max_length}

    def _spec(self, ckpt: str, adam: bool) -> dict[str, Any]:
        return {"name": "less_grads", "model": self.model, "checkpoint": ckpt, "adam": adam, "dim": self.dim,
                "proj_seed": self.proj_seed, "projection": self.projection, "template": self.template,
                "max_length": self.max_length,                "token_budget": self.token_budget, "max_batch": self.max_batch, "gguf_file": self.gguf_file,
                "device": self.device, "dtype": self.dtype}

    def _targets(self) -> tuple[Any, np.ndarray]:
        from ..scoring.base import conversations

        table, tasks = read_targets(self.targets, self.task_by, "less")
        return conversations(table)[0], tasks

    def checkpoints(self, ctx: SelectionContext, candidates: np.ndarray) -> list[Any]:
        from ..less.warmup import load_checkpoints, warmup

        if self.warmup:
            return load_checkpoints(self.warmup)
        if ctx.cache_dir is None:
            raise ConfigError("less: the warm-up needs a cache folder (set cache_dir)")
        n = max(1, round(self.warmup_fraction * len(candidates)))
        rows = ctx.rng("less-warmup").choice(candidates, size=min(n, len(candidates)), replace=False)
        return warmup(ctx.pool, rows, model=self.model, cache_dir=ctx.cache_dir, seed=ctx.seed,
                      template=self.template, train=self.train, gguf_file=self.gguf_file, device=self.device,
                      dtype=self.dtype)

    def run(self, ctx: SelectionContext, candidates: np.ndarray, budget: int | None) -> StepResult:
        from ..less.signal import LessGrads

        if budget is None:
            raise ConfigError("less is a budgeted selector: give it a budget")
        candidates = np.asarray(candidates, dtype=np.int64)
        convs, tasks = self._targets()
        ckpts = self.checkpoints(ctx, candidates)
        feats, tfeats, lrs = [], [], []
        for c in ckpts:
            progress.info(f"less: gradient features, checkpoint epoch {c.epoch} (lr {c.lr:.3g})")
            spec = self._spec(c.path, adam=True)
            feats.append(ctx.vectors(spec, candidates))          # aligned with the candidates
            t = LessGrads(**{k: v for k, v in self._spec(c.path, adam=False).items() if k != "name"}).encode(convs)
            if not np.isfinite(t).all():
                bad = np.flatnonzero(~np.isfinite(t).all(axis=1))
                raise ConfigError(f"less: {len(bad)} target example(s) have no assistant token to take a gradient "
                                  f"of (first: target row {int(bad[0])})")
            tfeats.append(t)
            lrs.append(c.lr)
        ok = np.isfinite(np.asarray(feats[0][:, 0], dtype=np.float32))
        pos = np.flatnonzero(ok)
        score, per_task = less_scores(feats, tfeats, lrs, tasks, pos, self.chunk)
        order = np.lexsort((np.arange(len(pos)), -score))
        rows = candidates[pos]
        kept = rows[order[:budget]]
        dropped = {"over_budget": int(len(rows) - len(kept))}
        if (~ok).any():
            dropped["no_gradient"] = int((~ok).sum())
        task_names = list(dict.fromkeys(tasks.tolist()))
        best = per_task.argmax(axis=1) if len(rows) else np.zeros(0, dtype=np.int64)
        return StepResult(kept=kept, dropped=dropped, details={
            "checkpoints": [{"epoch": c.epoch, "lr": c.lr, "path": c.path} for c in ckpts],
            "targets": len(tasks), "tasks": task_names,
            "selected_by_task": {task_names[j]: int((best[order[:budget]] == j).sum()) for j in range(len(task_names))},
        })
