"""SelectIT's faithful rule (issue 18 item 11): the released arithmetic, the first-turn rule, prompt files."""

from __future__ import annotations

import numpy as np
import pytest

from siftkit.errors import ConfigError
from siftkit.scoring.selectit import (
    FAITHFUL_PROMPTS,
    FAITHFUL_REQUESTS,
    FRAME,
    PROMPTS,
    SelectIT,
    aggregate,
    load_prompts_file,
)


def released_rule(probs: list[list[list[float]]], alpha: float, k: int = 5) -> tuple[list[float], list[list[float]],
                                                                                     list[float]]:
    """A literal transcription of the released scripts' arithmetic, loop for loop, on the full-vocabulary
    probabilities of the five digit tokens: ``probs[model][record * k + prompt] = [p1..p5]``. Returns the
    token level of each record's first prompt (first model), the sentence level per model and the model
    level (three models, weights 7/20, 13/20, 70/90)."""
    sentence_per_model, first_token = [], []
    for m, pro in enumerate(probs):
        pro_softmax = []
        for item in pro:
            tmp0 = [np.exp(item[i] / sum(item)) for i in range(len(item))]
            pro_softmax.append([tmp0[j] / sum(tmp0) for j in range(len(tmp0))])
        sentence = []
        for idx in range(len(pro_softmax) // k):
            tokens = []
            for row in range(idx * k, (idx + 1) * k):
                base = np.argmax(pro_softmax[row])
                total = 0
                for t in range(k):
                    total += pro_softmax[row][base] - pro_softmax[row][t]
                tokens.append((base + 1) * (total / (k - 1)))
            if m == 0:
                first_token.append(tokens[0])
            sentence.append(np.average(tokens) / (1 + alpha * np.std(tokens)))
        sentence_per_model.append(sentence)
    model = [sentence_per_model[0][i] * (7 / 20) + sentence_per_model[1][i] * (13 / 20)
             + sentence_per_model[2][i] * (70 / 90) for i in range(len(sentence_per_model[0]))]
    return first_token, sentence_per_model, model


def hand_made_probs(n: int, seed: int) -> np.ndarray:
    """(3 models, n records, 5 prompts, 5 digits) full-vocabulary probabilities: they sum to less than 1."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(5, 0.6), size=(3, n, 5)) * rng.uniform(0.05, 0.9, size=(3, n, 5, 1))
    p[0, 0, 0] = [0.1, 0.2, 0.4, 0.2, 0.1]            # a peaked row and a uniform one
    p[0, 1, :] = 0.02
    p[1, 2, 3] = [0.3, 0.3, 0.1, 0.05, 0.05]          # a tie at the top: the lower rating wins in both
    return p


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_faithful_arithmetic_matches_released_rule(alpha):
    p = hand_made_probs(7, seed=3)
    want_tok, want_sent, want_model = released_rule([list(map(list, pm.reshape(-1, 5))) for pm in p], alpha)
    # logits are the log-probabilities up to a constant: renormalising over the digits divides by their sum
    tok, sent, model = aggregate(np.log(p) + 1.7, [7_000, 13_000, 70_000], alpha, "faithful")
    np.testing.assert_allclose(tok, want_tok, rtol=1e-12)
    np.testing.assert_allclose(sent, want_sent, rtol=1e-12)
    np.testing.assert_allclose(model, want_model, rtol=1e-12)
    # the default rule (plain renormalisation, size-proportional weights) is a different number
    _, sent_r, model_r = aggregate(np.log(p), [7, 13, 70], alpha, "renorm")
    peaked = np.arange(7) != 1                        # record 1 is uniform: 0 under both rules
    assert np.all(sent_r[0][peaked] > 2 * sent[0][peaked]) and sent_r[0][1] == sent[0][1] == 0
    # (the second softmax maps probabilities in [0, 1] into [1, e] before renormalising: flatter)
    np.testing.assert_allclose(model_r, (7 * sent_r[0] + 13 * sent_r[1] + 70 * sent_r[2]) / 90, rtol=1e-12)


def test_faithful_one_model_and_unscorable_rows():
    p = hand_made_probs(3, seed=5)[:1]
    logits = np.log(p)
    logits[0, 1, 2] = np.nan                          # a prompt that did not fit: the record is NaN
    _, sent, model = aggregate(logits, [123], 0.2, "faithful")
    _, want, _ = released_rule([list(map(list, p[0].reshape(-1, 5)))] * 3, 0.2)
    assert np.isnan(sent[0, 1]) and np.isnan(model[1])
    np.testing.assert_allclose(sent[0, [0, 2]], np.asarray(want[0])[[0, 2]], rtol=1e-12)
    np.testing.assert_allclose(model, sent[0], rtol=0, equal_nan=True)


def test_faithful_needs_five_prompts_and_one_or_three_models(tmp_path):
    short = tmp_path / "three.txt"
    short.write_text("Rate it 1-5.\nScore it 1-5.\nGrade it 1-5.\n")
    with pytest.raises(ConfigError, match=r"needs 5 rating prompts.*three.txt has 3"):
        SelectIT("m", rule="faithful", prompts_file=str(short))
    with pytest.raises(ConfigError, match="1 model or 3"):
        SelectIT(models=["a", "b"], rule="faithful")
    with pytest.raises(ConfigError, match="rule must be one of"):
        SelectIT("m", rule="released")
    with pytest.raises(ConfigError, match="either 'prompts' or 'prompts_file'"):
        SelectIT("m", prompts=list(PROMPTS), prompts_file=str(short))
    nine = tmp_path / "nine.txt"                     # the released file has 9 lines; -k 5 uses the first 5
    nine.write_text("".join(f"Request number {i}: rate the answer from 1 to 5.\n" for i in range(9)))
    sig = SelectIT("m", rule="faithful", prompts_file=str(nine))
    assert sig.prompts == [f"Request number {i}: rate the answer from 1 to 5." + FRAME for i in range(5)]
    assert sig.config()["rule"] == "faithful" and "rule" not in SelectIT("m").config()
    assert SelectIT("m", rule="faithful").prompts == list(FAITHFUL_PROMPTS)
    assert SelectIT("m").prompts == list(PROMPTS)     # the default rule keeps siftkit's paraphrases


def test_default_faithful_prompts_have_the_released_frame():
    assert len(FAITHFUL_PROMPTS) == 5
    for req, fmt in zip(FAITHFUL_REQUESTS, FAITHFUL_PROMPTS):
        text = fmt.format(instruction="Add 2 and 2.", response="4")
        assert text == f"{req}\n\nInstruction:Add 2 and 2.\nResponse:4\nThe answer is: \n"
        assert "1" in req and "5" in req


def test_text_prompts_file(tmp_path):
    f = tmp_path / "rating_prompt.txt"
    f.write_bytes(b"# my rating requests\nRate the reply from 1 to 5 {strictly}.\n\n   \nScore it 1-5.\r\n")
    got = load_prompts_file(str(f))
    assert [g.format(instruction="I", response="R") for g in got] == [
        "Rate the reply from 1 to 5 {strictly}.\n\nInstruction:I\nResponse:R\nThe answer is: \n",
        "Score it 1-5.\n\nInstruction:I\nResponse:R\nThe answer is: \n"]
    with pytest.raises(ConfigError, match="not found"):
        load_prompts_file(str(tmp_path / "missing.txt"))


BAD_FILES = [
    ("full.txt", b"Rate 1-5.\nRate {instruction} -> {response}\n",
     r"full\.txt:2: a text prompts file holds one rating request per line"),
    ("latin.txt", b"Rate 1-5.\nNote 1 \xe0 5.\n", r"latin\.txt:2: not UTF-8"),
    ("empty.txt", b"# nothing\n\n", r"empty\.txt: no rating prompts"),
    ("bad.yaml", b"prompts:\n  - '{instruction} {response}'\n\n  - 'Rate {instruction} {answer}'\n",
     r"bad\.yaml:4: prompts\[1\].*invalid"),
    ("num.yaml", b"prompts:\n  - '{instruction} {response}'\n  - 5\n",
     r"num\.yaml:3: prompts\[1\]: expected a template string"),
    ("other.yml", b"templates: ['{instruction}']\n", r"other\.yml: unknown key"),
    ("broken.yaml", b"prompts:\n  - 'a\n  b: [\n", r"broken\.yaml:\d+:\d+: invalid YAML"),
]


@pytest.mark.parametrize("name, content, match", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_prompts_file_errors_name_file_and_line(tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ConfigError, match=match):
        load_prompts_file(str(tmp_path / name))


def test_yaml_prompts_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text('prompts:\n  - "Rate 1-5.\\n{instruction}\\n{response}\\nScore: "\n'
                 "  - |\n    Grade {{1-5}}: {instruction} / {response}\n")
    assert load_prompts_file(str(f)) == ["Rate 1-5.\n{instruction}\n{response}\nScore: ",
                                         "Grade {{1-5}}: {instruction} / {response}\n"]
    assert SelectIT("m", prompts_file=str(f)).prompts == load_prompts_file(str(f))


# --- end to end on a tiny model: the first-turn rule -------------------------------------------------------

def digit_probs(torch, model, tok, text: str) -> list[float]:
    """Full-vocabulary next-token probabilities of the digits 1..5 after ``text`` (with BOS, as tokenized)."""
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        p = torch.softmax(model(ids).logits[0, -1].double(), -1)
    return [float(p[tok.convert_tokens_to_ids(str(d))]) for d in range(1, 6)]


def test_faithful_rates_the_first_turn(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from scoring_tiny import build_tiny_lm, msgs, pool_table

    tiny = str(build_tiny_lm(tmp_path / "tiny"))
    model, tok = AutoModelForCausalLM.from_pretrained(tiny).eval(), AutoTokenizer.from_pretrained(tiny)
    prompts = tmp_path / "short.txt"             # short requests: the tiny model's context is 256 tokens
    prompts.write_text("".join(f"Rate {i} 1-5.\n" for i in range(5)))
    convs = [
        msgs(("user", "hello there"), ("assistant", "hi, how can I help?"),
             ("user", "Explain photosynthesis."), ("assistant", "Plants make sugar from light.")),
        msgs(("system", "Be terse."), ("user", "Two plus two?"), ("assistant", "four"), ("user", "and 3+3?"),
             ("assistant", "six")),
        msgs(("user", "only a question")),
        msgs(("assistant", "a greeting"), ("user", "a question"), ("assistant", "an answer")),
    ]
    out = SelectIT(tiny, rule="faithful", prompts_file=str(prompts)).compute(pool_table(convs))
    first = [("hello there", "hi, how can I help?"), ("Two plus two?", "four"), None, ("a question", "an answer")]
    fmts = load_prompts_file(str(prompts))
    for i, pair in enumerate(first):
        if pair is None:
            assert np.isnan(out["selectit_sentence"][i]) and out["selectit_reason"][i] == "no_response"
            continue
        probs = [digit_probs(torch, model, tok, f.format(instruction=pair[0], response=pair[1])) for f in fmts]
        _, sent, _ = released_rule([probs] * 3, 0.2)
        assert out["selectit_sentence"][i] == pytest.approx(sent[0][0], rel=1e-5)
        assert out["selectit_model"][i] == out["selectit_sentence"][i]
        assert out["selectit_reason"][i] == ""
    # the default rule rates everything before the last reply instead: a different score for record 0
    renorm = SelectIT(tiny, prompts_file=str(prompts)).compute(pool_table(convs[:1]))
    assert renorm["selectit_sentence"][0] != pytest.approx(out["selectit_sentence"][0], rel=1e-3)
