"""LESS (Xia et al., 2024): gradient-influence targeted selection.

- :mod:`.warmup`: LoRA warm-up on a random fraction of the pool, per-epoch checkpoints with Adam moments;
- :mod:`.grads`: batched per-sample LoRA gradients, Adam update directions;
- :mod:`.projection`: the seeded Rademacher projection, generated block by block (never stored whole);
- :mod:`.signal`: the ``less_grads`` vector signal (cached, resumable);
- the ``less`` selector lives in :mod:`siftkit.selectors.less`.
"""
