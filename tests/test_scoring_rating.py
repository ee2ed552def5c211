"""DEITA, SelectIT and knowledge signals on a tiny random Llama, checked against direct computations."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from scoring_tiny import SAMPLES, build_tiny_lm, msgs, pool_table
from siftkit.errors import ConfigError
from siftkit.scoring import rating as R
from siftkit.scoring.base import digit_ids
from siftkit.scoring.deita import COMPLEXITY_PROMPT, QUALITY_PROMPT, Deita
from siftkit.scoring.knowledge import TEMPLATES, Knowledge
from siftkit.scoring.selectit import PROMPTS, SelectIT, token_level


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_lm(tmp_path_factory.mktemp("tiny_r")))


@pytest.fixture(scope="module")
def hf(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny).eval(), AutoTokenizer.from_pretrained(tiny)


def next_digit_probs(hf, text: str, digits: range) -> np.ndarray:
    model, tok = hf
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits[0, -1].double()
    sel = logits[[tok.convert_tokens_to_ids(str(d)) for d in digits]]
    return torch.softmax(sel, -1).numpy()


def test_deita_expected_value_per_turn_and_evol(tiny, hf):
    out = Deita(tiny).compute(pool_table(SAMPLES + [msgs(("user", "hi"))]))
    ev = np.arange(1, 7)
    for i, conv in enumerate(SAMPLES):
        pairs = [(conv[j - 1]["content"], conv[j]["content"]) for j in range(1, len(conv))
                 if conv[j]["role"] == "assistant" and conv[j - 1]["role"] == "user"]
        c = [next_digit_probs(hf, COMPLEXITY_PROMPT.format(instruction=u), range(1, 7)) @ ev for u, _ in pairs]
        q = [next_digit_probs(hf, QUALITY_PROMPT.format(instruction=u, response=a), range(1, 7)) @ ev
             for u, a in pairs]
        assert out["deita_turns"][i] == len(pairs)
        assert out["deita_complexity"][i] == pytest.approx(np.mean(c), rel=1e-5)
        assert out["deita_quality"][i] == pytest.approx(np.mean(q), rel=1e-5)
        assert out["deita_evol"][i] == pytest.approx(float(np.dot(c, q)), rel=1e-5)
    assert ((out["deita_quality"][:-1] > 1) & (out["deita_quality"][:-1] < 6)).all()
    assert np.isnan(out["deita_quality"][-1]) and out["deita_reason"][-1] == "no_response"
    assert out["deita_turns"][-1] == 0


def test_rating_prompt_truncation_keeps_the_question(tiny, hf):
    _, tok = hf
    long = "Explain how photosynthesis works in simple words. " * 40
    p = R.build(QUALITY_PROMPT, {"instruction": long, "response": long}, tok, "raw", 120)
    assert p.truncated and len(p.ids) <= 120
    assert tok.decode(p.ids).endswith(" \n##Quality: ")
    out = Deita(tiny, max_length=120).compute(pool_table([msgs(("user", long), ("assistant", long))]))
    assert out["deita_truncated"][0] and np.isfinite(out["deita_evol"][0])
    short = R.build(QUALITY_PROMPT, {"instruction": "a", "response": "b"}, tok, "raw", 120)
    assert not short.truncated


def test_digit_ids_resolved_from_tokenizer(hf):
    _, tok = hf
    ids = digit_ids(tok, range(1, 7))
    assert [tok.convert_ids_to_tokens(int(i)) for i in ids] == [str(d) for d in range(1, 7)]
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({"[UNK]": 0, "1": 1, "2": 2, "hello": 3}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    no_three = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]")
    with pytest.raises(ConfigError, match="digit '3'"):
        digit_ids(no_three, range(1, 7))


def test_selectit_levels(tiny, hf, tmp_path):
    p = np.array([[0.1, 0.2, 0.4, 0.2, 0.1], [0.2, 0.2, 0.2, 0.2, 0.2]])
    np.testing.assert_allclose(token_level(p), [3 * (0.3 + 0.2 + 0.2 + 0.3) / 4, 1 * 0.0])
    out = SelectIT(tiny).compute(pool_table(SAMPLES[:3]))
    for i, conv in enumerate(SAMPLES[:3]):
        last = max(j for j, m in enumerate(conv) if m["role"] == "assistant")
        inst = "\n\n".join(m["content"] for m in conv[:last])
        s = np.array([token_level(next_digit_probs(hf, f.format(instruction=inst, response=conv[last]["content"]),
                                                   range(1, 6))[None])[0] for f in PROMPTS])
        assert out["selectit_token"][i] == pytest.approx(s[0], rel=1e-5)
        assert out["selectit_sentence"][i] == pytest.approx(s.mean() / (1 + 0.2 * s.std()), rel=1e-5)
        assert out["selectit_model"][i] == pytest.approx(out["selectit_sentence"][i], rel=1e-12)
    # model level: weights proportional to parameter count
    other = str(build_tiny_lm(tmp_path / "other", seed=1))
    two = SelectIT(models=[tiny, other]).compute(pool_table(SAMPLES[:3]))
    alone = SelectIT(other).compute(pool_table(SAMPLES[:3]))
    n1 = sum(x.numel() for x in hf[0].parameters())
    sig = SelectIT(models=[tiny, other])
    sig.setup()
    n2 = sig._models[1].n_params
    want = (n1 * out["selectit_sentence"] + n2 * alone["selectit_sentence"]) / (n1 + n2)
    np.testing.assert_allclose(two["selectit_model"], want, rtol=1e-6)
    with pytest.raises(ConfigError, match="either"):
        SelectIT(tiny, models=[tiny])
    with pytest.raises(ConfigError, match="fields"):
        SelectIT(tiny, prompts=["{instruction} {bad}", "{response}"])


def test_knowledge_matches_teacher_forcing(tiny, hf):
    model, tok = hf
    q = "What is the capital of France?"
    convs = [msgs(("user", q), ("assistant", "Paris is the capital.")), msgs(("user", q))]
    out = Knowledge(tiny).compute(pool_table(convs))
    lps = []          # reference: mean log-prob of the answer under each template, unbatched
    for fmt in TEMPLATES:
        head = fmt.split("{answer}")[0].format(question=q)
        e = tok(head + "Paris is the capital.", return_offsets_mapping=True)
        tgt = [t for t, (s, en) in enumerate(e["offset_mapping"]) if en > s and en > len(head)]
        x = torch.tensor([e["input_ids"]])
        with torch.no_grad():
            lp = torch.log_softmax(model(x).logits[0].double(), -1)
        lps.append(np.mean([lp[t - 1, x[0, t]].item() for t in tgt]))
    assert out["knowledge_logprob"][0] == pytest.approx(np.mean(lps), rel=1e-5)
    assert np.isnan(out["knowledge_level"][1]) and out["knowledge_reason"][1] == "no_response"


def test_knowledge_level_of_a_memorised_fact(tmp_path):
    """Fit a tiny model on one fact under the first two templates: greedy recall there, not elsewhere."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_tiny_lm(tmp_path / "fit")
    model, tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    q, a = "What is the capital of France?", "Paris is the capital."
    texts = [t.format(question=q, answer=a) for t in TEMPLATES[:2]]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for _ in range(60):
        for text in texts:
            batch = torch.tensor([tok(text)["input_ids"]])
            loss = model(batch, labels=batch).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.save_pretrained(folder)
    out = Knowledge(str(folder)).compute(pool_table([msgs(("user", q), ("assistant", a)),
                                                     msgs(("user", q), ("assistant", "Sure! Here is a list."))]))
    assert out["knowledge_level"][0] >= 2 and out["knowledge_greedy"][0] >= 0.5
    assert out["knowledge_level"][1] == 0
    assert out["knowledge_logprob"][0] > out["knowledge_logprob"][1]
