"""``selectit``: SelectIT (Liu et al., 2024) self-reflection scores from rating prompts, no generation.

For each of ``k`` rating prompts (default 5, digits 1-5) one forward pass reads the next-token logits of
the digit tokens (ids resolved from the tokenizer) and renormalises them over the 5 digits.

- token level (prompt k): ``s_k = argmax rating x mean_{i != top}(p_top - p_i)``; column ``selectit_token``
  is ``s_0`` (the first prompt) of the first model;
- sentence level: ``mean_k s_k / (1 + alpha * std_k s_k)`` (alpha = 0.2, population std), column
  ``selectit_sentence`` (first model);
- model level: sum over ``models`` of the sentence-level scores weighted by parameter count (weights sum
  to 1), column ``selectit_model`` (equals the sentence level with one model).

Two rules (``rule=``):

- ``renorm`` (default): the above, with siftkit's own five paraphrased prompts; the instruction is the
  query segment (all turns before the last assistant turn, joined with a blank line) and the response is
  the last assistant turn.
- ``faithful``: the released code's arithmetic. The renormalised probabilities go through a second
  softmax (``q = softmax(p)``) before the token level; exactly 5 prompts (the first 5 given, as the released
  scripts run with ``-k 5``); the model level uses the released constants ``7/20, 13/20, 70/90`` for three
  models (in the order given; one model: the sentence level); the record's *first* user turn is rated with
  the assistant turn that follows it. Default prompts: siftkit's own five rating requests in the released
  prompts' frame (``FRAME``); the original wording is not shipped (``prompts_file=`` reads it).

Prompts are truncated as described in ``scoring.rating`` (fields cut, instruction text kept intact).
``prompts_file=`` reads the prompt list from a file (``load_prompts_file``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ConfigError
from ..registry import register_signal
from ..signals.segments import FlatBatch, flatten
from ..yamlfile import load_yaml_mapping, read_small_file, sequence_item_lines
from . import base as B
from . import rating as R

# siftkit's own paraphrases of a 1-5 rating request (the method needs k paraphrases; wording is free).
PROMPTS = (
    ("Rate how well the response answers the instruction, from 1 (very poor) to 5 (excellent).\n"
     "Instruction: {instruction}\nResponse: {response}\nRating (1-5): "),
    ("On a scale of 1 to 5, how good is this answer to the request?\n"
     "Request: {instruction}\nAnswer: {response}\nScore: "),
    ("Evaluate the quality of the reply below. Give a single number from 1 (worst) to 5 (best).\n"
     "Question: {instruction}\nReply: {response}\nQuality score: "),
    ("You are a strict grader. Read the task and the submitted response, then grade it 1-5.\n"
     "Task: {instruction}\nSubmitted response: {response}\nGrade: "),
    ("How helpful, correct and complete is the response? Answer with 1, 2, 3, 4 or 5.\n"
     "Instruction:\n{instruction}\nResponse:\n{response}\nAnswer: "),
)
DIGITS = range(1, 6)
RULES = ("renorm", "faithful")
FAITHFUL_K = 5
# The released rating prompts' frame: one rating request, a blank line, the fields with no space after the
# colon, and the answer slot (the digit is read right after "The answer is: " and a newline).
FRAME = "\n\nInstruction:{instruction}\nResponse:{response}\nThe answer is: \n"
# siftkit's own rating requests for the faithful rule (same 1-5 scale and answer slot as the released
# prompts, our wording; the released wording is read with prompts_file=, see docs/published.md).
FAITHFUL_REQUESTS = (
    ("Read the instruction and the response below and give the response one score from 1 to 5 for how "
     "accurately it carries out the instruction; write the score alone."),
    ("Judge how closely the response follows the instruction and how correct it is, then answer with a single "
     "number between 1 and 5, where 5 is best."),
    ("Grade the response on a 1 to 5 scale for its accuracy and its adherence to the instruction, and reply "
     "with nothing but the grade."),
    ("On a scale from 1 (poor) to 5 (excellent), how well does the response fulfil the instruction? Give only "
     "the number."),
    ("Decide how precise and how faithful to the instruction the response is, and state your verdict as one "
     "score from 1 to 5."),
)
# The released model level: hard-coded weights for three models (7B, 13B, 70B), in this order.
FAITHFUL_MODEL_WEIGHTS = (7 / 20, 13 / 20, 70 / 90)
YAML_EXT = (".yaml", ".yml")


def framed(request: str) -> str:
    """A rating request (plain text) as a prompt template in the released frame."""
    return request.replace("{", "{{").replace("}", "}}") + FRAME


FAITHFUL_PROMPTS = tuple(framed(r) for r in FAITHFUL_REQUESTS)


def load_prompts_file(path: str) -> list[str]:
    """The rating prompts of a file, in order.

    - ``.yaml`` / ``.yml``: a mapping ``{prompts: [TEMPLATE, ...]}``, each a ``str.format`` template over
      ``{instruction}`` and ``{response}`` (literal braces doubled);
    - any other name: the released layout, one rating request per line (plain text; blank lines and lines
      starting with ``#`` are skipped), each put in ``FRAME``.

    ``path`` may be a URL (``s3://``, ``gs://``, ``file://``): read whole, once, through siftkit.fs.

    Errors are ``ConfigError`` naming the file and line.
    """
    blob = read_small_file(path, "selectit prompts file")    # local or a URL: one read
    if path.lower().endswith(YAML_EXT):
        data = load_yaml_mapping(path, "selectit prompts file", text=blob)
        extra = sorted(set(data) - {"prompts"})
        if extra:
            raise ConfigError(f"{path}: unknown key(s) {extra}; a selectit prompts file has 'prompts' "
                              "(a list of templates)")
        items = data.get("prompts")
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{path}: 'prompts' must be a non-empty list of template strings")
        lines = sequence_item_lines(path, "prompts", text=blob)
        for i, t in enumerate(items):
            where = f"{path}:{lines[i]}: prompts[{i}]"
            if not isinstance(t, str):
                raise ConfigError(f"{where}: expected a template string, got {type(t).__name__}")
            R.check_format(t, ("instruction", "response"), where)
        return list(items)
    raw = blob.splitlines()
    out = []
    for n, b in enumerate(raw, 1):
        try:
            line = b.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}:{n}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "{instruction}" in line or "{response}" in line:
            raise ConfigError(f"{path}:{n}: a text prompts file holds one rating request per line and siftkit "
                              f"adds the fields ({FRAME!r}); full templates with {{instruction}} go in a YAML "
                              "file under 'prompts:'")
        out.append(framed(line))
    if not out:
        raise ConfigError(f"{path}: no rating prompts (one rating request per line)")
    return out


@register_signal("selectit")
class SelectIT(B.ModelSignal):
    def __init__(self, model: str | None = None, *, models: list[str] | None = None,
                 prompts: list[str] | tuple[str, ...] | None = None, prompts_file: str | None = None,
                 alpha: float = 0.2, mode: str = "raw", rule: str = "renorm", **kw: Any):
        if models is None:
            models = [model] if model else []
        elif model:
            raise ConfigError("selectit: give either 'model' or 'models', not both")
        if not models or not all(isinstance(m, str) and m for m in models):
            raise ConfigError("selectit: needs 'model' (or 'models': a list of models of different sizes)")
        super().__init__(models[0], **kw)
        if mode not in R.MODES:
            raise ConfigError(f"selectit: mode must be one of {R.MODES}, got {mode!r}")
        if rule not in RULES:
            raise ConfigError(f"selectit: rule must be one of {RULES}, got {rule!r}")
        if prompts is not None and prompts_file is not None:
            raise ConfigError("selectit: give either 'prompts' or 'prompts_file', not both")
        where = "selectit prompts"
        if prompts_file is not None:
            prompts, where = load_prompts_file(prompts_file), f"selectit prompts file {prompts_file}"
        elif prompts is None:
            prompts = FAITHFUL_PROMPTS if rule == "faithful" else PROMPTS
        else:
            for p in prompts:
                R.check_format(p, ("instruction", "response"), where)
        if rule == "faithful":
            if len(prompts) < FAITHFUL_K:
                raise ConfigError(f"selectit: rule 'faithful' needs {FAITHFUL_K} rating prompts (the released "
                                  f"scripts run with k = 5); {where} has {len(prompts)}")
            prompts = list(prompts)[:FAITHFUL_K]
            if len(models) not in (1, len(FAITHFUL_MODEL_WEIGHTS)):
                raise ConfigError(f"selectit: rule 'faithful' combines 1 model or 3 (the released model level "
                                  f"weights 3 models by 7/20, 13/20, 70/90), got {len(models)}; use "
                                  "rule 'renorm' (weights proportional to parameter counts)")
        elif len(prompts) < 2:
            raise ConfigError("selectit: needs at least 2 rating prompts (the sentence level uses their spread)")
        self.models, self.prompts, self.alpha, self.mode = list(models), list(prompts), float(alpha), mode
        self.rule = rule

    def config(self) -> dict[str, Any]:
        cfg = self.model_config()
        cfg.pop("model")
        out = {**cfg, "models": self.models, "prompts": self.prompts, "alpha": self.alpha, "mode": self.mode}
        if self.rule != "renorm":     # the default rule adds no key: caches from before `rule` stay valid
            out["rule"] = self.rule
        return out

    def columns(self) -> dict[str, pa.DataType]:
        return {"selectit_token": pa.float64(), "selectit_sentence": pa.float64(),
                "selectit_model": pa.float64(), "selectit_reason": pa.string()}

    def setup(self) -> None:
        self._models = [self.load(m) for m in self.models]
        self._lm = self._models[0]

    def compute(self, batch: pa.Table) -> dict[str, np.ndarray]:
        if self._lm is None or not getattr(self, "_models", None):
            self.setup()
        fb = flatten(batch)
        n = fb.n
        if self.rule == "faithful":
            query, resp, has_resp = first_turn(fb)
        else:
            query, resp, has_resp = fb.texts("query"), fb.texts("response"), fb.last_assistant >= 0
        reasons = [B.OK] * n
        for r in range(n):
            if not has_resp[r]:
                reasons[r] = B.NO_RESPONSE
            elif not resp[r].strip():
                reasons[r] = B.EMPTY_RESPONSE
            elif not query[r].strip():
                reasons[r] = B.EMPTY_PROMPT
        todo = [r for r in range(n) if reasons[r] == B.OK]
        fields = [{"instruction": query[r], "response": resp[r]} for r in todo]
        logits = np.full((len(self._models), len(todo), len(self.prompts), len(DIGITS)), np.nan)
        for m, lm in enumerate(self._models):
            logits[m] = self._digit_logits(lm, fields)
        sizes = [lm.n_params for lm in self._models]
        tok, sent, model = aggregate(logits, sizes, self.alpha, self.rule)
        token = np.full(n, np.nan)
        sentence = np.full(n, np.nan)
        model_level = np.full(n, np.nan)
        token[todo], sentence[todo], model_level[todo] = tok, sent[0], model
        for r in todo:
            if not np.isfinite(sentence[r]):
                reasons[r] = B.TOO_LONG
        return {"selectit_token": token, "selectit_sentence": sentence, "selectit_model": model_level,
                "selectit_reason": B.reasons_array(reasons)}

    def _digit_logits(self, lm: Any, fields: list[dict[str, str]]) -> np.ndarray:
        """(len(fields), k, 5) digit logits, NaN where a prompt does not fit."""
        digits = B.digit_ids(lm.tokenizer, DIGITS)
        max_len = self.context_length(lm)
        out = np.full((len(fields), len(self.prompts), len(DIGITS)), np.nan)
        if not fields:
            return out
        for k, fmt in enumerate(self.prompts):
            prompts = [R.build(fmt, f, lm.tokenizer, self.mode, max_len) for f in fields]
            out[:, k] = R.digit_logits(lm, prompts, digits, self.effective_token_budget(lm), self.max_batch)
        return out


def first_turn(fb: FlatBatch) -> tuple[list[str], list[str], np.ndarray]:
    """Per record: the first user turn, the assistant turn right after it ("" when there is none), and
    whether it exists (the released code rates ``conversations[0]`` and ``conversations[1]``)."""
    roles, contents, off = fb.roles, fb.contents, fb.offsets.tolist()
    query, resp, has = [], [], np.zeros(fb.n, dtype=bool)
    for r in range(fb.n):
        user = next((j for j in range(off[r], off[r + 1]) if roles[j] == "user"), None)
        asst = None
        if user is not None:
            asst = next((j for j in range(user + 1, off[r + 1]) if roles[j] == "assistant"), None)
        query.append((contents[user] or "") if user is not None else "")
        resp.append((contents[asst] or "") if asst is not None else "")
        has[r] = asst is not None
    return query, resp, has


def aggregate(logits: np.ndarray, sizes: list[int], alpha: float, rule: str) -> tuple[np.ndarray, np.ndarray,
                                                                                       np.ndarray]:
    """SelectIT's three levels from digit logits (models, n, k, 5): ``(token (n,), sentence (models, n),
    model (n,))``; token is the first prompt of the first model."""
    p = R.softmax(logits)                                   # renormalised over the 5 digits
    if rule == "faithful":
        p = R.softmax(p)                                    # the released code's second softmax
    tok = token_level(p.reshape(-1, p.shape[-1])).reshape(p.shape[:-1])      # (models, n, k)
    with np.errstate(invalid="ignore"):
        sentence = tok.mean(-1) / (1.0 + alpha * tok.std(-1))
    if rule == "faithful":
        w = np.asarray(FAITHFUL_MODEL_WEIGHTS if len(sizes) > 1 else (1.0,), dtype=np.float64)
    else:
        s = np.asarray(sizes, dtype=np.float64)
        w = s / s.sum()
    return tok[0, :, 0], sentence, w @ sentence


def token_level(p: np.ndarray) -> np.ndarray:
    """SelectIT token-level score from renormalised rating probabilities p (n, K): rating x mean gap."""
    if not len(p):
        return np.zeros(0)
    top = np.nanargmax(np.nan_to_num(p, nan=-1.0), axis=1)
    p_top = p[np.arange(len(p)), top]
    gap = (p_top[:, None] - p).sum(1) / (p.shape[1] - 1)
    return (top + 1) * gap
