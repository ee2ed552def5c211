"""The ``special_tokens`` signal: literal control tokens in record text, the filter, the output escape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from conftest import SHARED_POOL, convo, shared_pool_or_skip, write_jsonl
from siftkit.cli import main
from siftkit.io.pool import MESSAGE_TYPE
from siftkit.signals.compute import build_signal, compute_signals
from siftkit.signals.special_tokens import ZWSP, escape_special_tokens, token_list


def table(convs: list[list[dict]], originals: list[str] | None = None) -> pa.Table:
    n = len(convs)
    return pa.table({"id": [f"{i:016x}" for i in range(n)], "source": ["s"] * n,
                     "messages": pa.array(convs, MESSAGE_TYPE), "original": originals or ["{}"] * n})


def msgs(*pairs: tuple[str, str]) -> list[dict]:
    return [{"role": r, "content": c} for r, c in pairs]


def test_counts_and_kinds_in_every_role():
    t = table([
        msgs(("system", "<|im_start|>system"), ("user", "hi <|endoftext|>"), ("assistant", "ok</s><|endoftext|>")),
        msgs(("user", "plain text with <b>html</b> and a | pipe"), ("assistant", "no tokens here")),
        msgs(("user", "[INST] q [/INST]"), ("assistant", "<|eot_id|>")),
        msgs(("user", "escaped <\u200b|endoftext|> is inert"), ("assistant", "a")),
    ])
    out = build_signal("special_tokens").compute(t)
    assert out["special_tokens"].tolist() == [4, 0, 3, 0]
    assert out["special_token_kinds"].tolist() == ["</s> <|endoftext|> <|im_start|>", "",
                                                   "<|eot_id|> [/INST] [INST]", ""]


def test_tokenizer_special_tokens_are_searched(tmp_path):
    from tokenizers import Tokenizer, models

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
    tok.add_special_tokens(["<|my_turn|>"])
    tok.add_tokens(["notspecial"])                      # an added, non-special token is not a control token
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    t = table([msgs(("user", "x <|my_turn|> y notspecial"), ("assistant", "z"))])
    plain = build_signal("special_tokens").compute(t)
    with_tok = build_signal({"name": "special_tokens", "tokenizer": str(path)})
    assert "<|my_turn|>" in with_tok.tokens() and "notspecial" not in with_tok.tokens()
    assert plain["special_tokens"].tolist() == [0]
    assert with_tok.compute(t)["special_tokens"].tolist() == [1]
    assert with_tok.fingerprint() != build_signal("special_tokens").fingerprint()
    extra = build_signal({"name": "special_tokens", "extra": ["<<END>>"]})
    assert extra.compute(table([msgs(("user", "a <<END>>"), ("assistant", "b"))]))["special_tokens"].tolist() == [1]


def test_cached_like_other_signals(tmp_path):
    t = table([msgs(("user", "q"), ("assistant", "a <|endoftext|>"))] * 3)
    stats: dict = {}
    got = compute_signals(t, ["special_tokens"], str(tmp_path / "c"), stats=stats)
    again = compute_signals(t, ["special_tokens"], str(tmp_path / "c"), stats=stats)
    assert got.column("special_tokens").to_pylist() == [1, 1, 1] == again.column("special_tokens").to_pylist()
    assert again.column("special_token_kinds").to_pylist() == ["<|endoftext|>"] * 3
    assert stats["special_tokens"]["cached"] == 3


def test_escape_rewrites_messages_and_original():
    t = table([msgs(("user", "a <|endoftext|> b"), ("assistant", "[INST]x")),
               msgs(("user", "clean"), ("assistant", "clean"))],
              originals=['{"prompt": "a <|endoftext|> b", "completion": "[INST]x"}',
                         '{"prompt":  "clean",  "completion": "clean"}'])
    e = escape_special_tokens(t)
    m = e.column("messages").to_pylist()
    assert m[0][0]["content"] == f"a <{ZWSP}|endoftext|> b" and m[0][1]["content"] == f"[{ZWSP}INST]x"
    assert m[1] == t.column("messages").to_pylist()[1]
    o = e.column("original").to_pylist()
    assert json.loads(o[0]) == {"prompt": f"a <{ZWSP}|endoftext|> b", "completion": f"[{ZWSP}INST]x"}
    assert o[1] == '{"prompt":  "clean",  "completion": "clean"}'          # untouched, byte for byte
    assert build_signal("special_tokens").compute(e)["special_tokens"].tolist() == [0, 0]
    # a token spelled with JSON escapes in the original is found through the decoded text and escaped too
    t2 = table([msgs(("user", "<|im_end|>"), ("assistant", "a"))], originals=['{"q": "\\u003c|im_end|>"}'])
    assert json.loads(escape_special_tokens(t2).column("original")[0].as_py()) == {"q": f"<{ZWSP}|im_end|>"}
    assert len(token_list()) == len(set(token_list()))


@pytest.fixture
def pool_dir(tmp_path: Path) -> Path:
    rows = [convo(f"question {i}", f"answer {i}" + (" <|endoftext|>" if i % 3 == 0 else "")) for i in range(30)]
    write_jsonl(tmp_path / "pool" / "t0" / "a.jsonl", rows)
    write_jsonl(tmp_path / "pool" / "clean" / "b.jsonl", [convo(f"other {i}", f"reply {i}") for i in range(10)])
    return tmp_path / "pool"


def run_select(pool_dir: Path, out: Path, *extra: str) -> dict:
    assert main(["-q", "select", str(pool_dir), "--budget", "1.0", "--out", str(out),
                 "--cache-dir", str(out.parent / "cache"), *extra]) == 0
    return json.loads((out / "manifest.json").read_text())


def test_filter_drops_records_with_special_tokens(pool_dir, tmp_path):
    m = run_select(pool_dir, tmp_path / "f", "--filter", "special_tokens == 0")
    assert m["counts"]["filtered"] == 10 and m["counts"]["selected"] == 30
    lines = (tmp_path / "f" / "selected.jsonl").read_text(encoding="utf-8")
    assert "<|endoftext|>" not in lines and lines.count("\n") == 30


def test_escape_in_converted_and_original_output(pool_dir, tmp_path):
    run_select(pool_dir, tmp_path / "plain", "--output-format", "messages")
    assert (tmp_path / "plain" / "selected.jsonl").read_text(encoding="utf-8").count("<|endoftext|>") == 10
    m = run_select(pool_dir, tmp_path / "esc", "--output-format", "messages", "--escape-special-tokens")
    text = (tmp_path / "esc" / "selected.jsonl").read_text(encoding="utf-8")
    assert "<|endoftext|>" not in text and text.count(f"<{ZWSP}|endoftext|>") == 10
    assert m["outputs"]["escape_special_tokens"] is True and m["config"]["output"]["escape_special_tokens"] is True
    run_select(pool_dir, tmp_path / "orig", "--escape-special-tokens")
    rows = [json.loads(x) for x in (tmp_path / "orig" / "selected.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 40 and not any("<|endoftext|>" in json.dumps(r, ensure_ascii=False) for r in rows)
    # the report shows the count per source
    run_select(pool_dir, tmp_path / "rep", "--report")
    page = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    sec = page[page.index('id="special-tokens"'):].split("</section>", 1)[0]
    assert '<tr><td>t0</td><td class="num">30</td><td class="num">10</td><td>33.3%</td>' in sec
    (tmp_path / "rep" / "report.html").unlink()                 # `siftkit report OUT` rebuilds the same section
    assert main(["-q", "report", str(tmp_path / "rep")]) == 0
    again = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    assert again[again.index('id="special-tokens"'):].split("</section>", 1)[0] == sec


def test_escape_option_in_a_recipe(pool_dir, tmp_path):
    from siftkit.config import build_config

    cfg = build_config({"inputs": [str(pool_dir)], "budget": 5,
                        "output": {"dir": str(tmp_path / "r"), "escape_special_tokens": True}}, "recipe")
    assert cfg.output["escape_special_tokens"] is True


def test_t0_pool_fraction_with_literal_special_tokens():
    """Measured on the shared pool: every T0 record's completion ends with a literal <|endoftext|>
    (55,185 of 55,185; ~29% of the whole ~192K pool)."""
    shared_pool_or_skip()
    t0 = SHARED_POOL / "t0_50k"
    if not t0.is_dir():
        pytest.skip("t0_50k not in the shared pool")
    from siftkit.io import read_pool

    pool = read_pool(str(t0), on_error="skip").table
    out = build_signal("special_tokens").compute(pool.select(["id", "messages"]))
    has = out["special_tokens"] > 0
    frac = float(has.mean())
    print(f"t0_50k: {int(has.sum()):,} of {len(has):,} records ({frac:.1%}) contain a literal special token")
    assert frac > 0.99
    assert set(np.unique(out["special_token_kinds"][has]).tolist()) == {"<|endoftext|>"}
    resp = [m[-1]["content"] for m in pool.column("messages").to_pylist()[:2000]]
    assert all(r.endswith("<|endoftext|>") for r in resp)
