"""Moved to :mod:`siftkit.training` (kept so ``siftkit.finetune`` imports keep working)."""

from .training.base import BaseLM
from .training.settings import check_model, train_options

__all__ = ["BaseLM", "check_model", "train_options"]
