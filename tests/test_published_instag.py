"""InsTag: strict tag parsing, the tagger signal on a tiny model, and complexity-first coverage selection."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from diversity_helpers import qa_pool
from siftkit.errors import ConfigError
from siftkit.registry import make, selector_class
from siftkit.scoring.instag import BAD_SCHEMA, INVALID_JSON, parse_tags
from siftkit.selectors.base import SelectionContext
from siftkit.selectors.instag import coverage_select

# ------------------------------------------------------------------------------------------------ parsing

@pytest.mark.parametrize("text, tags", [
    ('["Math", "poem ", "math"]', ["math", "poem"]),
    ('[{"tag": "coding", "explanation": "asks for code"}, {"tag": "Python", "explanation": "..."}]',
     ["coding", "python"]),
    ('```json\n["a", "b"]\n```', ["a", "b"]),
    ("  []  ", []),
])
def test_parse_valid(text, tags):
    assert parse_tags(text) == (tags, "")


@pytest.mark.parametrize("text, reason", [
    ('Tags: ["math"]', INVALID_JSON), ('["math", "po', INVALID_JSON), ("", INVALID_JSON),
    ('{"tag": "math"}', BAD_SCHEMA), ('["math", 3]', BAD_SCHEMA), ('[{"name": "x"}]', BAD_SCHEMA),
    ('["a", {"tag": "b"}]', BAD_SCHEMA),
])
def test_parse_failures_are_explicit(text, reason):
    assert parse_tags(text) == (None, reason)


# ------------------------------------------------------------------------------------------------ coverage

def ref_coverage(tags: list[list[str] | None], budget: int) -> list[int]:
    """Literal InsTag sampling with Python sets."""
    order = sorted([i for i, t in enumerate(tags) if t], key=lambda i: (-len(set(tags[i])), i))
    picks: list[int] = []
    while order and len(picks) < budget:
        covered: set[str] = set()
        for i in list(order):
            if len(picks) < budget and not set(tags[i]) <= covered:
                picks.append(i)
                covered |= set(tags[i])
                order.remove(i)
    picks += [i for i, t in enumerate(tags) if not t][:budget - len(picks)]
    return picks


def test_coverage_worked_example():
    tags = [["a", "b", "c"], ["a"], ["d"], ["a", "b"], None, ["b", "e"]]
    picks, details = coverage_select(tags, 6)
    # pass 1: abc, then be (brings e), then d; pass 2: ab; pass 3: a; then the untagged record
    assert picks.tolist() == [0, 5, 2, 3, 1, 4]
    assert details == {"passes": 3, "distinct_tags": 5, "untagged_used": 1}
    assert coverage_select(tags, 3)[0].tolist() == [0, 5, 2]


def test_coverage_matches_reference_on_random_tags():
    rng = np.random.default_rng(0)
    vocab = [f"t{i}" for i in range(15)]
    tags = [None if rng.random() < 0.1 else list(rng.choice(vocab, int(rng.integers(0, 5)), replace=False))
            for _ in range(200)]
    for budget in (5, 37, 150, 200, 500):
        got = coverage_select(tags, budget)[0].tolist()
        assert got == ref_coverage(tags, budget)
        assert len(got) == min(budget, 200) == len(set(got))


def _ctx(n: int, columns: dict) -> SelectionContext:
    return SelectionContext(pool=qa_pool([f"q{i}" for i in range(n)]), signals=pa.table(columns), seed=0)


def test_selector_reads_json_strings_and_list_columns():
    tags = [["x", "y"], ["x"], ["z"], None, ["y"]]
    as_json = [None if t is None else json.dumps(t) for t in tags]
    cands = np.asarray([0, 1, 2, 4], dtype=np.int64)
    for col in (pa.array(as_json, pa.string()), pa.array(tags, pa.list_(pa.string()))):
        sel = make(selector_class("instag-coverage"), {"tags": "user_tags"}, "instag")
        res = sel.run(_ctx(5, {"user_tags": col}), cands, 3)
        assert res.kept.tolist() == [0, 2, 1]
        assert res.dropped == {"over_budget": 1}
        assert sel.needs() == ["user_tags"]


def test_selector_rejects_malformed_tags_naming_the_record():
    sel = make(selector_class("instag-coverage"), {"tags": "t"}, "instag")
    with pytest.raises(ConfigError, match="r1"):
        sel.run(_ctx(2, {"t": pa.array(['["a"]', "a, b"])}), np.arange(2), 1)
    with pytest.raises(ConfigError, match="unknown column"):
        make(selector_class("instag-coverage"), {"tags": "nope"}, "i").run(_ctx(2, {"t": pa.array(["[]"] * 2)}),
                                                                          np.arange(2), 1)


# ------------------------------------------------------------------------------------------------ tagger

torch_mark = pytest.mark.skipif(
    not all(__import__("importlib").util.find_spec(m) for m in ("torch", "transformers")),
    reason="torch/transformers not installed")

ANSWER = '["greeting", "math"]'


@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    """A tiny random Llama trained for a few seconds to answer every chat prompt with ``ANSWER``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from scoring_tiny import build_tiny_lm

    folder = build_tiny_lm(tmp_path_factory.mktemp("instag_tiny"))
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    torch.manual_seed(0)
    prompts = ["hello there", "Two plus two?", "Write a poem about the sea.", "What is 3 + 4? Explain.",
               "hello there\n\nWhat is 3 + 4?"]
    seqs = []
    for p in prompts:
        head = tok.apply_chat_template([{"role": "user", "content": f"Tags for: {p}"}], tokenize=False,
                                       add_generation_prompt=True)
        h = tok(head, add_special_tokens=False)["input_ids"]
        a = tok(ANSWER + "<|im_end|>", add_special_tokens=False)["input_ids"]
        seqs.append((h, a))
    width = max(len(h) + len(a) for h, a in seqs)
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    labels = torch.full((len(seqs), width), -100)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (h, a) in enumerate(seqs):
        ids[i, :len(h) + len(a)] = torch.tensor(h + a)
        labels[i, len(h):len(h) + len(a)] = torch.tensor(a)
        mask[i, :len(h) + len(a)] = 1
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(folder)
    return str(folder)


@torch_mark
def test_tagger_end_to_end(taught):
    from scoring_tiny import msgs, pool_table
    from siftkit.scoring.instag import InsTag

    pool = pool_table([msgs(("user", "Two plus two?"), ("assistant", "four")),
                       msgs(("user", "hello there"), ("assistant", "hi"), ("user", "What is 3 + 4?"),
                            ("assistant", "7")),
                       msgs(("system", "s"), ("assistant", "no user turn"))])
    sig = InsTag(taught, prompt="Tags for: {query}", max_new_tokens=40, device="cpu", max_length=128)
    out = sig.compute(pool)
    assert out["instag_reason"].tolist() == ["", "", "empty_prompt"]
    assert [json.loads(t) for t in out["instag_tags"][:2]] == [["greeting", "math"]] * 2
    assert out["instag_count"][:2].tolist() == [2.0, 2.0] and np.isnan(out["instag_count"][2])
    # an answer cut by max_new_tokens is not JSON: reported, never silently tagged
    cut = InsTag(taught, prompt="Tags for: {query}", max_new_tokens=4, device="cpu", max_length=128)
    o2 = cut.compute(pool.slice(0, 1))
    assert o2["instag_reason"][0] == INVALID_JSON and np.isnan(o2["instag_count"][0])
    assert o2["instag_tags"][0] is None


@torch_mark
def test_batched_generation_equals_one_at_a_time(taught):
    from siftkit.scoring.instag import generate
    from siftkit.scoring.model import load_model

    lm = load_model(taught, device="cpu")
    seqs = [np.asarray(lm.tokenizer(t)["input_ids"]) for t in
            ["hello", "What is the capital of France? Paris", "sea and sky", "1 2 3 4 5 6 7 8 9 0 poem"]]
    batched = generate(lm, seqs, 8, token_budget=10_000, max_batch=4)
    single = [generate(lm, [s], 8, token_budget=10_000, max_batch=1)[0] for s in seqs]
    assert batched == single


def test_tagger_config_errors():
    from siftkit.scoring.instag import InsTag

    with pytest.raises(ConfigError, match="instag"):
        InsTag("m", prompt="no field here")
    with pytest.raises(ConfigError, match="max_new_tokens"):
        InsTag("m", max_new_tokens=0)
