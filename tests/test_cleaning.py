"""Cleaning signals (quality, repetition) with hand-computed values, datatrove as a reference, the clean preset."""

from __future__ import annotations

import json
import math
from collections import Counter

import pyarrow as pa
import pytest

import siftkit
from conftest import convo, write_jsonl
from siftkit.cli import main
from siftkit.presets import PRESETS
from siftkit.signals.quality import Quality, text_quality
from siftkit.signals.repetition import Repetition, text_repetition
from siftkit.signals.words import cjk_fraction, split_words


def test_words_are_cjk_aware():
    assert split_words("Hi, 你好 world_2! 3.5") == ["Hi", "你", "好", "world_2", "3", "5"]
    assert split_words("今天天气很好。") == ["今", "天", "天", "气", "很", "好"]
    assert cjk_fraction("ab你好") == 0.5 and cjk_fraction("") == 0.0


def test_quality_statistics_by_hand():
    q = text_quality("The cat sat... on the mat\n- one item\n- two items...\n# Title")
    # words: The cat sat on the mat one item two items Title = 11; chars 3+3+3+2+3+3+3+4+3+5+5 = 37
    assert q["words"] == 11 and q["mean_word_len"] == pytest.approx(37 / 11)
    assert q["symbol_ratio"] == pytest.approx((1 + 2) / 11)          # one '#', two '...'
    assert q["bullet_frac"] == pytest.approx(2 / 4) and q["ellipsis_frac"] == pytest.approx(1 / 4)
    assert q["alpha_frac"] == 1.0 and q["stop_words"] == 1              # only "the" (case-folded)
    assert q["c4_line_frac"] == 0.0                                     # no line ends with . ! ? etc.
    assert (q["placeholder"], q["refusal"], q["as_ai"]) == (0, 0, 0)
    q = text_quality("It is 42 and 7.\nThat is all of it, with the rest.")
    # words: It is 42 and 7 That is all of it with the rest = 13, two of them numbers
    assert q["alpha_frac"] == pytest.approx(11 / 13) and q["c4_line_frac"] == 1.0
    assert q["stop_words"] == 5                                         # and, that, of, with, the
    z = text_quality("你好，我是一个学生。这是我的书。")
    assert z["words"] == 13 and z["mean_word_len"] == 1.0 and z["cjk_frac"] == pytest.approx(13 / 16)   # 3 of 16 are punctuation
    e = text_quality("")
    assert e["words"] == 0 and math.isnan(e["mean_word_len"]) and math.isnan(e["c4_line_frac"])


def test_markers():
    assert text_quality("As an AI language model, I cannot provide that.")["as_ai"] == 1
    assert text_quality("作为一个AI语言模型，我不能回答。")["as_ai"] == 1
    assert text_quality("I'm sorry, but I cannot help with that request.")["refusal"] == 1
    assert text_quality("I can't help but smile at the sunrise.")["refusal"] == 0
    assert text_quality("x " * 200 + "I'm sorry, but no.")["refusal"] == 0      # only the opening is read
    for t in ("Lorem ipsum dolor sit amet.", "Dear {{name}}, welcome.", "Analyse [insert poem] now.",
              "Find a <placeholder> restaurant.", "Rewrite: {sentence}"):
        assert text_quality(t)["placeholder"] == 1, t
    assert text_quality('print(f"{name}")\nx = {value}')["placeholder"] == 0   # code, not a template


def test_repetition_by_hand():
    r = text_repetition("a b a b a b c d e f g h a b c d e f g h")   # 20 one-char words
    assert r["top_2gram_frac"] == pytest.approx(8 / 20)              # "a b" x4
    assert r["top_3gram_frac"] == pytest.approx(6 / 20)              # every repeated 3-gram occurs twice
    assert r["dup_5gram_frac"] == pytest.approx(8 / 20)              # words 12..19 repeat words 4..11
    assert r["dup_8gram_frac"] == pytest.approx(8 / 20) and r["dup_9gram_frac"] == 0.0
    r = text_repetition("hello there\nhello there\nbye\n\nhello there")
    assert r["dup_line_frac"] == pytest.approx(2 / 4)
    assert r["dup_line_char_frac"] == pytest.approx(22 / 36)         # 2 x 11 of 11+11+3+11 characters
    assert r["dup_para_frac"] == pytest.approx(0 / 2)                # "hello there\nhello there\nbye", "hello there"
    r = text_repetition("one two three")
    assert r["top_2gram_frac"] == 0.0                                # no 2-gram occurs twice
    assert math.isnan(text_repetition("")["dup_5gram_frac"])


def test_signals_on_a_batch_match_single_texts():
    rows = [convo("Tell me a story about a dog.", "The dog ran. The dog ran. The dog ran home."),
            convo("你好", "你好你好你好"), convo("x", "?!")]
    pool = siftkit.read([{"data": rows, "source": "t"}]).table
    q, r = Quality().compute(pool), Repetition().compute(pool)
    for i, (u, a) in enumerate([(rw["messages"][0]["content"], rw["messages"][1]["content"]) for rw in rows]):
        for k, v in text_quality(a).items():
            got = q[f"{k}_response"][i]
            assert (math.isnan(got) and math.isnan(v)) if isinstance(v, float) and math.isnan(v) else got == v
        assert q["words_query"][i] == text_quality(u)["words"]
        for k, v in text_repetition(a).items():
            got = r[f"{k}_response"][i]
            assert (math.isnan(got) and math.isnan(v)) or got == pytest.approx(v), (i, k)
    assert set(Quality(segments="response").columns()) == {f"{k}_response" for k in text_quality("a")}


REF_TEXTS = [
    "the cat sat on the mat the cat sat on the mat and then the cat sat on the mat again",
    "alpha beta gamma delta epsilon zeta eta theta alpha beta gamma delta epsilon zeta eta theta iota",
    "one two three four five six seven eight nine ten one two three four five six seven eight nine ten",
    "we like to code we like to code we like to test and we like to code",
]


def test_repetition_agrees_with_datatrove():
    """datatrove's Gopher repetition functions as the reference (skipped when datatrove is not installed).
    Differences by definition: datatrove's top n-gram length counts the n-1 spaces inside the n-gram, and
    its denominator is len(text); ours count word characters only. Duplicate n-grams: datatrove scans greedily
    and jumps n words after each repeat, so a repeated block longer than n is undercounted; ours counts every
    word covered by a repeated occurrence. They agree when each repeated block is exactly n words long."""
    rep = pytest.importorskip("datatrove.pipeline.filters.gopher_repetition_filter")
    for text in REF_TEXTS:
        words = split_words(text)
        chars = sum(map(len, words))
        ours = text_repetition(text)
        for n in (2, 3, 4):
            grams = rep.get_n_grams(words, n)
            _top, count = Counter(grams).most_common(1)[0]
            theirs = rep.find_top_duplicate(grams) - (n - 1) * count if count > 1 else 0
            assert ours[f"top_{n}gram_frac"] * chars == pytest.approx(theirs), (text, n)
        for n in range(5, 11):   # datatrove skips n words after a repeat, so it counts at most what we count
            assert ours[f"dup_{n}gram_frac"] * chars >= rep.find_all_duplicate(words, n) - 1e-9, (text, n)
        lines = [ln for ln in text.split("\n") if ln.strip()]
        n_dup, c_dup = rep.find_duplicates(lines)
        assert ours["dup_line_frac"] * len(lines) == pytest.approx(n_dup)
    for n in range(5, 11):
        block = [f"w{i}" for i in range(n)]
        words = block + ["gap", "filler"] + block + ["end"]
        ours = text_repetition(" ".join(words))
        chars = sum(map(len, words))
        assert ours[f"dup_{n}gram_frac"] * chars == pytest.approx(rep.find_all_duplicate(words, n)), n
    lines = ["alpha beta", "gamma", "alpha beta", "alpha beta", "delta"]
    n_dup, c_dup = rep.find_duplicates(lines)
    ours = text_repetition("\n".join(lines))
    assert ours["dup_line_frac"] * 5 == pytest.approx(n_dup)
    assert ours["dup_line_char_frac"] * sum(map(len, lines)) == pytest.approx(c_dup)


def test_clean_preset_counts_every_drop_by_rule(tmp_path):
    long_ok = ("Gravity is the force by which a planet or other body draws objects toward its centre. It keeps "
               "the Moon in orbit around the Earth, and the Earth in orbit around the Sun. Isaac Newton described "
               "it as a pull between masses; Albert Einstein later explained it as the curvature of spacetime "
               "caused by mass and energy, which also bends light passing near stars.")
    rows = [
        convo("Explain gravity.", long_ok),                                              # kept
        convo("Say hi.", "Hello there!"),                                                # kept (short)
        convo("Write something.", "!!!"),                                                # no words
        convo("Rewrite: {sentence}", "Sure."),                                           # placeholder query
        convo("Who are you?", "As an AI language model, I do not have feelings."),       # as_ai
        convo("Help me hack.", "I'm sorry, but I cannot help with that."),              # refusal
        convo("Repeat.", "\n".join(["same line here"] * 6 + ["other"])),                 # duplicate lines
        convo("Sign it.", "Regards,\n[Your Name]"),                                      # placeholder response
    ]
    pool = write_jsonl(tmp_path / "p" / "pool.jsonl", rows)
    out = tmp_path / "out"
    assert main(["--quiet", "select", str(pool), "--preset", "clean", "--budget", "100%", "--out", str(out),
                 "--cache-dir", str(tmp_path / "c")]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["selected"] == 2 and m["counts"]["filtered"] == 6
    drops = {k: v for s in m["steps"] for k, v in s["dropped"].items()}
    assert drops == {"filter: words_response >= 1": 1, "filter: placeholder_query == 0": 1,
                     "filter: as_ai_response == 0": 1, "filter: refusal_response == 0": 1,
                     "filter: placeholder_response == 0": 1,
                     "filter: " + PRESETS["clean"]["steps"][6]["filter"]: 1}
    assert len(m["steps"]) == len(PRESETS["clean"]["steps"])


def test_signal_columns_have_declared_types():
    rows = [convo("q", "a b c")]
    t = siftkit.read([{"data": rows, "source": "t"}]).table
    for sig in (Quality(), Repetition()):
        out = sig.compute(t)
        for name, typ in sig.columns().items():
            pa.array(out[name], type=typ)   # converts without loss of kind
