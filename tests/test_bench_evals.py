"""Evaluator scoring on hand-made items, and the batched model paths against direct computations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench_helpers import write_eval
from siftkit.bench.evals import bbh, gsm8k, ifeval, mmlu
from siftkit.bench.evals.common import pick, task_limit, task_path
from siftkit.errors import ConfigError

# ---------------------------------------------------------------- MMLU

def test_mmlu_reads_header_letters_and_indices(tmp_path: Path) -> None:
    ev = write_eval(tmp_path / "eval")
    rows = mmlu.read_csv(str(ev / "mmlu" / "test" / "misc_test.csv"))
    assert len(rows) == 6                                  # header skipped
    assert [r["answer"] for r in rows] == [1, 0, 1, 2, 0, 1]   # "1" -> B, "A" -> A, "B" -> B, ...
    assert rows[0]["subject"] == "misc" and rows[0]["choices"] == ["3", "4", "5", "6"]
    dev = mmlu.read_csv(str(ev / "mmlu" / "dev" / "misc_dev.csv"))   # no header
    assert len(dev) == 1 and dev[0]["answer"] == 1


def test_mmlu_bad_answer_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "x_test.csv"
    p.write_text("q,a,b,c,d,E\n")
    with pytest.raises(ConfigError, match=r"x_test.csv:1: answer 'E'"):
        mmlu.read_csv(str(p))


def test_mmlu_prompt_and_fewshot(tmp_path: Path) -> None:
    ev = {"data_dir": str(write_eval(tmp_path / "eval")), "limit": None, "mmlu_shots": 1}
    items = mmlu.load(ev)
    p = items[0]["prompt"]
    assert p.startswith("The following are multiple choice questions (with answers) about misc.\n\n")
    assert "What is 1 + 1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n" in p          # the dev example, solved
    assert p.endswith("What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:")


def test_mmlu_score() -> None:
    ll = np.array([[-1.0, -0.5, -3, -4], [-0.1, -2, -2, -2], [-5, -4, -3, -2]])
    acc, ok = mmlu.score(ll, [1, 2, 3])
    assert ok.tolist() == [True, False, True] and acc == pytest.approx(2 / 3)


# ---------------------------------------------------------------- GSM8K

@pytest.mark.parametrize("out,ref,ok", [
    ("3 + 4 = 7\n#### 7", "7", True),
    ("The answer is 1,234.", "1234", True),
    ("It costs $18.00 in total.", "18", True),
    ("#### 12\nsome more text 99", "12", True),           # '####' wins over the last number
    ("5 then 6", "5", False),                             # last number otherwise
    ("no number here", "3", False),
    ("-4 degrees", "-4", True),
    ("0.5 of it", "1/2", False),
])
def test_gsm8k_exact_match(out: str, ref: str, ok: bool) -> None:
    assert gsm8k.is_correct(out, ref) is ok


def test_gsm8k_load_reference(tmp_path: Path) -> None:
    items = gsm8k.load({"data_dir": str(write_eval(tmp_path / "e")), "limit": 3})
    assert len(items) == 3 and all(it["reference"] == str(int(it["question"].split()[2]) + 2) for it in items)


# ---------------------------------------------------------------- BBH

@pytest.mark.parametrize("out,target,ok", [
    ("False", "False", True), ("false.", "False", True), ("So the answer is True.", "True", True),
    ("(B)", "(B)", True), ("B", "(B)", True), ("the answer is (A)", "(B)", False),
    ("valid\nbecause ...", "valid", True), ("invalid", "valid", False), ("", "True", False),
])
def test_bbh_exact_match(out: str, target: str, ok: bool) -> None:
    assert bbh.is_correct(out, target) is ok


def test_bbh_round_robin_and_shots(tmp_path: Path) -> None:
    ev = {"data_dir": str(write_eval(tmp_path / "e")), "limit": 4, "bbh_shots": 1}
    items = bbh.load(ev)
    assert [it["task"] for it in items] == ["boolean_expressions", "date_understanding"] * 2
    for it in items:   # one solved example of the same task, never the item itself
        demo, question = it["prompt"].split("\n\n", 1)
        assert question == it["input"] and demo.startswith("") and "\nAnswer: " in demo
        assert it["input"] not in demo
    assert bbh.load(ev) == items                           # deterministic


# ---------------------------------------------------------------- IFEval

CASES = [
    ("punctuation:no_comma", {}, "no commas here", "one, two"),
    ("length_constraints:number_words", {"relation": "less than", "num_words": 4}, "one two three", "a b c d"),
    ("length_constraints:number_words", {"relation": "at least", "num_words": 3}, "a b c", "a b"),
    ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 3}, "One. Two!",
     "One. Two! Three?"),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "first\n***\nsecond", "a\n***\n***\nb"),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
     "First part.\n\nThen, second.", "First part.\n\nAnd second."),
    ("keywords:forbidden_words", {"forbidden_words": ["rock"]}, "rocks roll", "a Rock here"),
    ("keywords:existence", {"keywords": ["sea", "sky"]}, "the Sea and the sky", "the sea only"),
    ("keywords:frequency", {"relation": "at least", "keyword": "war", "frequency": 2}, "war and War", "war once"),
    ("keywords:letter_frequency", {"let_relation": "less than", "letter": "t", "let_frequency": 2}, "a cat",
     "Two tall trees"),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and **two**", "*one* only"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* a\n* b", "* a\n* b\n- c"),
    ("detectable_format:title", {}, "<<My Title>>\ntext", "no title <<>>"),
    ("detectable_format:json_format", {}, '```json\n{"a": 1}\n```', "{a: 1}"),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2},
     "Section 1\nabc\nSection 2\ndef", "Section 1\nabc"),
    ("detectable_format:constrained_response", {}, "My answer is yes.", "Yes."),
    ("startend:quotation", {}, '"quoted"', 'not "quoted"'),
    ("startend:end_checker", {"end_phrase": "Any questions?"}, "Text. Any questions?", "Any questions? No."),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\nP.S. bye", "Hi. PS bye"),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Hi.\nP.P.S more", "Hi.\nP.S. more"),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "[name] at [address]", "[name] only"),
    ("change_case:english_lowercase", {}, "all lower case", "Not lower"),
    ("change_case:english_capital", {}, "ALL CAPS HERE", "ALL CAPS here"),
    ("change_case:capital_word_frequency", {"capital_relation": "at least", "capital_frequency": 2},
     "THIS IS loud", "ONLY one"),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Say hi."}, "say hi. Hi!", "Hi! Say hi."),
    ("combination:two_responses", {}, "first\n******\nsecond", "same\n******\nsame"),
]


@pytest.mark.parametrize("iid,kw,good,bad", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_ifeval_rule(iid: str, kw: dict, good: str, bad: str) -> None:
    assert ifeval.check(iid, good, kw) is True
    assert ifeval.check(iid, bad, kw) is False


def test_ifeval_covers_all_but_language() -> None:
    public = {c[0] for c in CASES}
    assert public == set(ifeval.CHECKS) and len(ifeval.CHECKS) == 24
    assert "language:response_language" not in ifeval.CHECKS


def test_ifeval_load_skips_uncovered_and_scores_prompt_level(tmp_path: Path) -> None:
    items = ifeval.load({"data_dir": str(write_eval(tmp_path / "e")), "limit": None})
    assert len(items) == 5 and all("language:response_language" not in it["instruction_id_list"] for it in items)
    assert items[0]["uncovered_in_file"] == 1
    two = next(it for it in items if len(it["instruction_id_list"]) == 2)
    assert ifeval.score_item("the sea is calm", two) == [True, True]
    assert ifeval.score_item("the sea, calm", two) == [True, False]


def test_ifeval_bad_kwargs_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="number_words"):
        ifeval.check("length_constraints:number_words", "x", {"words": 3})


# ---------------------------------------------------------------- common

def test_pick_is_seeded_and_stable() -> None:
    items = list(range(100))
    a, b = pick(items, 10, 0), pick(items, 10, 0)
    assert a == b and a == sorted(a) and len(set(a)) == 10 and pick(items, 10, 1) != a
    assert pick(items, None) == items and pick(items, 500) == items
    assert task_limit({"limit": 5, "limits": {"gsm8k": 2}}, "gsm8k") == 2
    assert task_limit({"limit": 5, "limits": {"gsm8k": 2}}, "bbh") == 5


def test_task_path_errors_name_the_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"eval.data_dir .* eval.paths.gsm8k"):
        task_path({}, "gsm8k", "gsm8k_test.jsonl")
    with pytest.raises(ConfigError, match="not found"):
        task_path({"data_dir": str(tmp_path)}, "gsm8k", "gsm8k_test.jsonl")
    p = tmp_path / "g.jsonl"
    p.write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n")
    assert task_path({"paths": {"gsm8k": str(p)}}, "gsm8k", "x") == str(p)


# ---------------------------------------------------------------- model paths (tiny random model)

@pytest.fixture(scope="module")
def em(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from scoring_tiny import build_tiny_lm
    from siftkit.bench.evals.common import EvalModel

    folder = build_tiny_lm(tmp_path_factory.mktemp("tiny"))
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    return EvalModel(model, tok, "chat", "cpu", batch_size=3)


def _direct_loglik(em, ctx: str, cont: str) -> float:
    import torch

    c = em.encode(ctx, True)
    k = em.encode(cont, False)
    ids = torch.tensor([c + k])
    with torch.no_grad():
        logp = torch.log_softmax(em.model(ids).logits[0].double(), -1)
    return float(sum(logp[len(c) + j - 1, k[j]] for j in range(len(k))))


def test_loglik_matches_unbatched(em) -> None:
    ctx = ["What is the capital of France?", "Two plus two", "hello", "The quick brown fox jumps over"]
    cont = [" Paris", " equals four", " there, how are you", " the lazy dog."]
    got = em.loglik(ctx, cont)
    want = [_direct_loglik(em, c, k) for c, k in zip(ctx, cont)]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_choice_loglik_fast_path_equals_pairwise(em) -> None:
    ctx = ["Question one?\nAnswer:", "A longer question about the sea and the sky?\nAnswer:", "Q\nAnswer:"]
    choices = [" A", " B", " C", " D"]
    fast = em.choice_loglik(ctx, choices)
    slow = em.loglik([c for c in ctx for _ in choices], choices * len(ctx)).reshape(len(ctx), 4)
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-4)
    assert not np.allclose(fast[0], fast[0, 0])            # the choices get different scores


def test_generate_is_greedy_and_batch_independent(em) -> None:
    prompts = [em.chat_prompt(q) for q in ("hello there", "Write a short poem about the sea.", "Two plus two?")]
    batched = em.generate(prompts, 6)
    single = [em.generate([p], 6)[0] for p in prompts]
    assert batched == single and all(isinstance(o, str) for o in batched)


def test_heldout_loss_matches_direct(em) -> None:
    import torch

    from scoring_tiny import SAMPLES
    from siftkit.bench.evals import heldout

    items = [{"id": f"r{i}", "messages": m} for i, m in enumerate(SAMPLES)]
    loss, recs = heldout.run(em, items, {"max_length": 256})
    tot, n = 0.0, 0
    for m in SAMPLES:   # direct: chat template text, every assistant content token + the <|im_end|> after it
        text = em.tokenizer.apply_chat_template(m, tokenize=False)
        enc = em.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offs = enc["input_ids"], enc["offset_mapping"]
        targets, pos = set(), 0
        for turn in m:
            at = text.index(turn["content"], pos)
            pos = at + len(turn["content"])
            if turn["role"] == "assistant":
                inside = [t for t, (s, e) in enumerate(offs) if e > s and s < pos and e > at]
                assert ids[inside[-1] + 1] == em.tokenizer.convert_tokens_to_ids("<|im_end|>")
                targets |= set(inside) | {inside[-1] + 1}
        with torch.no_grad():
            logp = torch.log_softmax(em.model(torch.tensor([ids])).logits[0].double(), -1)
        for t in sorted(targets):
            tot -= float(logp[t - 1, ids[t]])
            n += 1
    assert loss == pytest.approx(tot / n, rel=1e-5)
    assert sum(r["tokens"] for r in recs) == n and [r["id"] for r in recs] == [f"r{i}" for i in range(len(SAMPLES))]
