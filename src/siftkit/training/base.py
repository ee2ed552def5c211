"""Brief fine-tuning for selection methods that need a model trained on part of the pool.

DiverseEvol fine-tunes on its current selection before every round and re-embeds the pool with the result;
Cherry's "brief experience" fine-tunes on a small cluster-balanced sample before scoring IFD; LESS warms up
LoRA on a random fraction. All use the same training code as the bench (``siftkit.training.train``:
assistant-masked examples, TRL's ``SFTTrainer``, LoRA merged back into the model) and the same settings
(``siftkit.training.settings``): this module only loads the base once and trains a fresh copy of it per call.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from typing import Any


@dataclass
class BaseLM:
    """A base causal LM loaded once (``siftkit.scoring.model.load_model``: hub name, folder or ``.gguf``) and
    the resolved training template; ``finetune`` trains a deep copy, so the base stays untouched."""

    lm: Any                 # LoadedModel
    template: str

    @classmethod
    def load(cls, model: str, *, template: str = "auto", device: str = "auto", dtype: str = "auto",
             gguf_file: str | None = None, trust_remote_code: bool = False, revision: str | None = None) -> BaseLM:
        from ..scoring.model import load_model
        from ..scoring.templates import resolve

        lm = load_model(model, gguf_file=gguf_file, device=device, dtype=dtype,
                        trust_remote_code=trust_remote_code, revision=revision)
        if lm.tokenizer.pad_token_id is None:
            lm.tokenizer.pad_token = lm.tokenizer.eos_token
        return cls(lm, resolve(template, lm.tokenizer))

    @property
    def tokenizer(self) -> Any:
        return self.lm.tokenizer

    def finetune(self, conversations: list[list[dict[str, str]]], settings: dict[str, Any],
                 seed: int, callbacks: list[Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Fine-tune a fresh copy of the base on ``conversations``; returns (merged model in eval mode, log).

        ``log["kept"]`` lists the positions (into ``conversations``) of the examples actually trained on
        (a conversation with no assistant token left after templating and truncation is skipped). ``callbacks``:
        extra ``TrainerCallback`` objects (LESS snapshots every epoch)."""
        from .train import build_examples, train_cell

        ex = build_examples(conversations, self.tokenizer, self.template, int(settings["max_length"]))
        with tempfile.TemporaryDirectory(prefix="siftkit-finetune-") as work:
            model, log = train_cell(copy.deepcopy(self.lm.model), self.tokenizer, ex,
                                    {**settings, "save_model": False}, work, seed=int(seed), device=self.lm.device,
                                    callbacks=callbacks)
        log["kept"] = list(ex.kept)
        return model, log
