"""``knowledge``: how well the model already knows a QA pair's answer (knowledge memorisation level).

After FudanNLP's "Empirical Insights on Fine-Tuning LLMs for QA" (2024): probe the base model with several
paraphrased templates and bucket samples by how consistently the model recalls the answer. siftkit uses
teacher forcing, one forward pass per template, no generation: under each template the answer's tokens are
scored, giving their mean log-probability and whether greedy decoding would reproduce the answer exactly
(every answer token is the arg-max prediction, which is exactly the condition for greedy decoding to emit
it).

Columns: ``knowledge_logprob`` (mean over templates of the mean token log-probability of the answer),
``knowledge_greedy`` (fraction of templates under which greedy decoding reproduces the answer),
``knowledge_level`` (number of templates under which it does: 0 = unknown ... K = known under every
phrasing; NaN when unscored). The question is the last user turn before the last assistant turn, the answer that assistant
turn, cut to its first ``max_answer_tokens`` tokens (the same characters under every template). Templates
are raw text (base-model probing, tokenizer special tokens added). A prompt over ``max_length`` is NaN with
reason ``too_long`` (no truncation of the question).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ConfigError
from ..registry import register_signal
from . import base as B
from .nll import score
from .templates import span_mask

TEMPLATES = (
    "Question: {question}\nAnswer: {answer}",
    "Q: {question}\nA: {answer}",
    "{question}\nThe answer is: {answer}",
    "Here is a question and its correct answer.\n{question}\n{answer}",
)


@register_signal("knowledge")
class Knowledge(B.ModelSignal):
    def __init__(self, model: str, *, templates: list[str] | tuple[str, ...] = TEMPLATES,
                 max_answer_tokens: int = 32, **kw: Any):
        super().__init__(model, **kw)
        if len(templates) < 1:
            raise ConfigError("knowledge: needs at least one template")
        for t in templates:
            if t.count("{answer}") != 1 or not t.rstrip().endswith("{answer}") or "{question}" not in t:
                raise ConfigError(f"knowledge: template {t!r} must contain {{question}} and end with {{answer}}")
        if max_answer_tokens < 1:
            raise ConfigError("knowledge: max_answer_tokens must be positive")
        self.templates, self.max_answer_tokens = list(templates), int(max_answer_tokens)

    def config(self) -> dict[str, Any]:
        return {**self.model_config(), "templates": self.templates, "max_answer_tokens": self.max_answer_tokens}

    def columns(self) -> dict[str, pa.DataType]:
        return {"knowledge_logprob": pa.float64(), "knowledge_greedy": pa.float64(),
                "knowledge_level": pa.float64(), "knowledge_reason": pa.string()}

    def compute(self, batch: pa.Table) -> dict[str, np.ndarray]:
        lm = self.lm
        tok = lm.tokenizer
        max_len = self.context_length(lm)
        convs, last = B.conversations(batch)
        n, K = len(convs), len(self.templates)
        reasons = [B.OK] * n
        seqs, classes, slot = [], [], []
        for r, msgs in enumerate(convs):
            j = int(last[r])
            users = [m["content"] for m in msgs[:max(j, 0)] if m["role"] == "user"]
            if j < 0:
                reasons[r] = B.NO_RESPONSE
                continue
            answer = msgs[j]["content"].strip()
            if not answer:
                reasons[r] = B.EMPTY_RESPONSE
                continue
            if not users or not users[-1].strip():
                reasons[r] = B.EMPTY_PROMPT
                continue
            enc = tok(answer, add_special_tokens=False, return_offsets_mapping=True)
            if len(enc["input_ids"]) > self.max_answer_tokens:
                answer = answer[: enc["offset_mapping"][self.max_answer_tokens - 1][1]]
            built = []
            for fmt in self.templates:
                head = fmt[: fmt.index("{answer}")].format(question=users[-1].strip())
                text = head + answer + fmt[fmt.index("{answer}") + len("{answer}"):]
                e = tok(text, add_special_tokens=True, return_offsets_mapping=True)
                ids = np.asarray(e["input_ids"], dtype=np.int64)
                m = span_mask(np.asarray(e["offset_mapping"], dtype=np.int64).reshape(-1, 2),
                              (len(head), len(head) + len(answer)))
                m[0] = False
                if len(ids) > max_len or not m.any():
                    break
                built.append((ids, np.where(m, 0, -1)))
            if len(built) < K:
                reasons[r] = B.TOO_LONG
                continue
            for k, (ids, cls) in enumerate(built):
                seqs.append(ids)
                classes.append(cls)
                slot.append((r, k))
        st = score(lm, seqs, classes, 1, token_budget=self.effective_token_budget(lm), max_batch=self.max_batch)
        logprob = np.full((n, K), np.nan)
        greedy = np.zeros((n, K), dtype=bool)
        for s, (r, k) in enumerate(slot):
            logprob[r, k] = -st.nll[s, 0] / st.count[s, 0]
            greedy[r, k] = st.top1[s, 0] == st.count[s, 0]
        ok = np.asarray([x == B.OK for x in reasons])
        level = np.where(ok, greedy.sum(1), np.nan)
        return {"knowledge_logprob": logprob.mean(1), "knowledge_greedy": np.where(ok, greedy.mean(1), np.nan),
                "knowledge_level": level, "knowledge_reason": B.reasons_array(reasons)}
