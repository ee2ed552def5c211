"""Moved to :mod:`siftkit.training.train` (kept so ``siftkit.bench.train`` imports keep working)."""

from ..training.train import Examples, build_examples, drop_gguf_quantizer, train_cell

__all__ = ["Examples", "build_examples", "drop_gguf_quantizer", "train_cell"]
