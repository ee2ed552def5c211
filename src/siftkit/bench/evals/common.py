"""What every evaluator needs from a model: batched log-likelihoods, greedy generation, chat prompts.

``EvalModel`` wraps a transformers causal LM and its (fast) tokenizer. Log-likelihoods are computed for many
(context, continuation) pairs at once on right-padded batches; generation is greedy on left-padded batches
sorted by length, capped at ``max_new_tokens``. Prompts for instruction tasks go through the same template
code that fine-tuning uses (``siftkit.scoring.templates``), so the model is asked in the format it was
trained on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import ConfigError
from ...io.readers import jsonl_values


@dataclass
class EvalModel:
    model: Any
    tokenizer: Any
    template: str          # resolved template ("chat" or a named one)
    device: str
    batch_size: int = 8
    max_length: int | None = None

    def __post_init__(self) -> None:
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.max_length is None:
            cfg = self.model.config
            self.max_length = int(getattr(cfg, "max_position_embeddings", None) or 2048)

    def chat_prompt(self, user: str) -> tuple[str, bool]:
        """The rendered prompt for one user turn, ending with the assistant header; and whether to add BOS."""
        from ...scoring.templates import render

        r = render([{"role": "user", "content": user}], self.template, self.tokenizer, add_generation_prompt=True)
        return r.text, r.special

    def encode(self, text: str, special: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def loglik(self, contexts: list[str], continuations: list[str]) -> np.ndarray:
        """Sum of log p(continuation tokens | context) for each pair (plain text, BOS added to the context)."""
        import torch

        seqs, n_cont = [], []
        for ctx, cont in zip(contexts, continuations):
            c_ids = self.encode(ctx, True)
            k_ids = self.encode(cont, False)
            if not k_ids:
                raise ValueError(f"continuation {cont!r} has no tokens")
            ids = (c_ids + k_ids)[-self.max_length:]   # keep the end: the continuation must be scored
            seqs.append(ids)
            n_cont.append(min(len(k_ids), len(ids) - 1))
        out = np.zeros(len(seqs), dtype=np.float64)
        order = np.argsort([-len(s) for s in seqs], kind="stable")
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.batch_size):
            idx = order[start: start + self.batch_size]
            ids, att = _right_padded([seqs[i] for i in idx], pad)
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=att.to(self.device)).logits
            logp = torch.log_softmax(logits.float(), dim=-1).cpu()
            for r, i in enumerate(idx):
                n, k = len(seqs[i]), n_cont[i]
                pos = torch.arange(n - k, n)           # target positions; predicted from pos - 1
                out[i] = float(logp[r, pos - 1, ids[r, pos]].double().sum())
        return out

    def choice_loglik(self, contexts: list[str], choices: list[str]) -> np.ndarray:
        """(n, k) log p(choice | context) for the same k choices after every context.

        When every choice is one token (MMLU's " A".." D" in most tokenizers) one forward per context reads all
        k log-probs at its last position; otherwise every (context, choice) pair is scored with ``loglik``.
        """
        import torch

        single = []
        for c in choices:
            k = self.encode(c, False)
            single.append(k[0] if len(k) == 1 else None)
        fast = all(t is not None for t in single)
        if fast:   # the choice must tokenise the same after the context as alone
            probe = self.encode(contexts[0], True) if contexts else []
            fast = all(self.encode(contexts[0] + c, True)[len(probe):] == [t]
                       for c, t in zip(choices, single)) if contexts else True
        if not fast:
            flat = self.loglik([c for c in contexts for _ in choices], [k for _ in contexts for k in choices])
            return flat.reshape(len(contexts), len(choices))
        seqs = [self.encode(c, True)[-self.max_length:] for c in contexts]
        out = np.zeros((len(seqs), len(choices)), dtype=np.float64)
        order = np.argsort([-len(s) for s in seqs], kind="stable")
        pad, tok = self.tokenizer.pad_token_id, torch.tensor(single)
        for start in range(0, len(order), self.batch_size):
            idx = order[start: start + self.batch_size]
            ids, att = _right_padded([seqs[i] for i in idx], pad)
            last = att.sum(1) - 1
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=att.to(self.device)).logits
            logp = torch.log_softmax(logits[torch.arange(len(idx)), last.to(logits.device)].float(), -1).cpu()
            out[idx] = logp[:, tok].double().numpy()
        return out

    def generate(self, prompts: list[tuple[str, bool]], max_new_tokens: int) -> list[str]:
        """Greedy completions of rendered prompts (text, add-BOS), in input order."""
        import torch

        encoded = [self.encode(t, s)[-(self.max_length - max_new_tokens):] for t, s in prompts]
        outs: list[str] = [""] * len(prompts)
        order = np.argsort([-len(e) for e in encoded], kind="stable")
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.batch_size):
            idx = order[start: start + self.batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            att = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):               # left padding for generation
                ids[r, width - len(encoded[i]):] = torch.tensor(encoded[i])
                att[r, width - len(encoded[i]):] = 1
            with torch.inference_mode():
                gen = self.model.generate(input_ids=ids.to(self.device), attention_mask=att.to(self.device),
                                          max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                          pad_token_id=pad, eos_token_id=self.tokenizer.eos_token_id)
            for r, i in enumerate(idx):
                outs[i] = self.tokenizer.decode(gen[r, width:].tolist(), skip_special_tokens=True)
        return outs


def task_limit(ev: dict[str, Any], task: str) -> int | None:
    """``eval.limits[task]`` when given, else ``eval.limit`` (None: every item)."""
    limits = ev.get("limits") or {}
    return limits[task] if task in limits else ev.get("limit")


def pick(items: list[Any], limit: int | None, seed: int = 0) -> list[Any]:
    """A fixed, seeded subset of ``limit`` items (the same for every cell: the seed is the eval seed)."""
    if limit is None or limit >= len(items):
        return list(items)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(items), size=limit, replace=False))
    return [items[i] for i in keep]


def task_path(ev: dict[str, Any], task: str, default_name: str) -> str:
    """``eval.paths[task]``, else ``eval.data_dir/<default_name>``; an error naming both when missing."""
    path = (ev.get("paths") or {}).get(task)
    if path is None:
        if not ev.get("data_dir"):
            raise ConfigError(f"eval: no data for task {task!r}: set eval.data_dir (folder with {default_name}) "
                              f"or eval.paths.{task}")
        path = os.path.join(ev["data_dir"], default_name)
    if not os.path.exists(path):
        raise ConfigError(f"eval: data for task {task!r} not found at {path} (eval.data_dir / eval.paths.{task})")
    return path


def read_jsonl(path: str) -> list[dict[str, Any]]:
    return [v for _, v in jsonl_values(path)]


def write_jsonl(path: str, rows: Iterable[dict[str, Any]]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    os.replace(tmp, path)


def _right_padded(seqs: list[list[int]], pad: int) -> tuple[Any, Any]:
    """Right-padded (ids, attention mask) tensors for token id lists."""
    import torch

    width = max(len(q) for q in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    att = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, q in enumerate(seqs):
        ids[r, : len(q)] = torch.tensor(q)
        att[r, : len(q)] = 1
    return ids, att
