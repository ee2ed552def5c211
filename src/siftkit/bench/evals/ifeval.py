"""IFEval: greedy generation, rule-based checks of verifiable instructions (strict variant).

Reads ``ifeval_input.jsonl`` (``prompt``, ``instruction_id_list``, ``kwargs``). Covered instruction ids are
the keys of ``CHECKS`` (24 of the 25 ids in the public set); ``language:response_language`` needs a language
identifier and is not covered: prompts that carry an uncovered id are left out (their count is recorded).
Score = prompt-level strict accuracy (every instruction followed); instruction-level accuracy is stored too.
Words are ``\\w+`` runs, sentences end in ``.``, ``!`` or ``?``; see docs/bench.md for each rule.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from ...errors import ConfigError
from .common import EvalModel, pick, read_jsonl, task_limit, task_path


def _rel(n: int, relation: str, k: int) -> bool:
    if relation == "less than":
        return n < k
    if relation == "at least":
        return n >= k
    raise ValueError(f"unknown relation {relation!r}")


def _words(t: str) -> list[str]:
    return re.findall(r"\w+", t)


def _sentences(t: str) -> int:
    return len([s for s in re.split(r"(?<=[.!?])\s+", t.strip()) if re.search(r"\w", s)])


def _paragraphs_stars(t: str) -> int | None:
    parts = re.split(r"\s?\*\*\*\s?", t)
    if any(not p.strip() for p in parts[1:-1]):
        return None                           # an empty paragraph between two dividers
    return len([p for p in parts if p.strip()])


def _postscript(t: str, marker: str) -> bool:
    low = t.lower()
    if marker == "P.P.S":
        pat = r"\s*p\.\s?p\.\s?s.*$"
    elif marker == "P.S.":
        pat = r"\s*p\.\s?s\..*$"
    else:
        pat = r"\s*" + re.escape(marker.lower()) + r".*$"
    return bool(re.findall(pat, low, flags=re.MULTILINE))


def _json(t: str) -> bool:
    s = t.strip()
    s = re.sub(r"^```(?:json|JSON|Json)?\s*", "", s)
    s = re.sub(r"\s*```$", "", s)
    try:
        json.loads(s)
    except ValueError:
        return False
    return True


def _nth_paragraph(t: str, num_paragraphs: int, nth_paragraph: int, first_word: str) -> bool:
    paras = [p for p in re.split(r"\n\s*\n", t) if p.strip()]
    if len(paras) != num_paragraphs or not 1 <= nth_paragraph <= len(paras):
        return False
    words = _words(paras[nth_paragraph - 1])
    return bool(words) and words[0].lower() == first_word.lower()


def _two_responses(t: str) -> bool:
    parts = [p.strip() for p in t.split("******")]
    parts = [p for p in parts if p]
    return len(parts) == 2 and parts[0] != parts[1]


CHECKS: dict[str, Callable[..., bool]] = {
    "punctuation:no_comma": lambda t: "," not in t,
    "length_constraints:number_words": lambda t, relation, num_words: _rel(len(_words(t)), relation, num_words),
    "length_constraints:number_sentences":
        lambda t, relation, num_sentences: _rel(_sentences(t), relation, num_sentences),
    "length_constraints:number_paragraphs": lambda t, num_paragraphs: _paragraphs_stars(t) == num_paragraphs,
    "length_constraints:nth_paragraph_first_word": _nth_paragraph,
    "keywords:forbidden_words": lambda t, forbidden_words: not any(
        re.search(r"\b" + re.escape(w) + r"\b", t, flags=re.IGNORECASE) for w in forbidden_words),
    "keywords:existence": lambda t, keywords: all(re.search(re.escape(k), t, flags=re.IGNORECASE) for k in keywords),
    "keywords:frequency": lambda t, relation, keyword, frequency: _rel(
        len(re.findall(re.escape(keyword), t, flags=re.IGNORECASE)), relation, frequency),
    "keywords:letter_frequency": lambda t, let_relation, letter, let_frequency: _rel(
        t.lower().count(letter.lower()), let_relation, let_frequency),
    "detectable_format:number_highlighted_sections": lambda t, num_highlights: len(
        [h for h in re.findall(r"\*[^\n\*]*\*", t) if h.strip("*").strip()]
        + [h for h in re.findall(r"\*\*[^\n\*]*\*\*", t) if h.strip("*").strip()]) >= num_highlights,
    "detectable_format:number_bullet_lists": lambda t, num_bullets: len(
        re.findall(r"^\s*\*[^\*].*$", t, flags=re.MULTILINE) + re.findall(r"^\s*-.*$", t, flags=re.MULTILINE))
        == num_bullets,
    "detectable_format:title": lambda t: any(x.strip() for x in re.findall(r"<<([^\n]+)>>", t)),
    "detectable_format:json_format": _json,
    "detectable_format:multiple_sections": lambda t, section_spliter, num_sections: len(
        re.split(r"\s?" + re.escape(section_spliter) + r"\s?\d+\s?", t)) - 1 >= num_sections,
    "detectable_format:constrained_response": lambda t: any(
        o in t for o in ("My answer is yes.", "My answer is no.", "My answer is maybe.")),
    "startend:quotation": lambda t: len(t.strip()) > 1 and t.strip()[0] == '"' and t.strip()[-1] == '"',
    "startend:end_checker": lambda t, end_phrase: t.strip().lower().endswith(end_phrase.strip().lower()),
    "detectable_content:postscript": lambda t, postscript_marker: _postscript(t, postscript_marker),
    "detectable_content:number_placeholders": lambda t, num_placeholders: len(re.findall(r"\[.*?\]", t))
        >= num_placeholders,
    "change_case:english_lowercase": lambda t: bool(t.strip()) and t == t.lower(),
    "change_case:english_capital": lambda t: bool(t.strip()) and t == t.upper(),
    "change_case:capital_word_frequency": lambda t, capital_relation, capital_frequency: _rel(
        len([w for w in _words(t) if w.isupper()]), capital_relation, capital_frequency),
    "combination:repeat_prompt": lambda t, prompt_to_repeat: t.strip().lower().startswith(
        prompt_to_repeat.strip().lower()),
    "combination:two_responses": _two_responses,
}


def check(instruction_id: str, response: str, kwargs: dict[str, Any]) -> bool:
    fn = CHECKS[instruction_id]
    args = {k: v for k, v in (kwargs or {}).items() if v is not None}
    try:
        return bool(fn(response, **args))
    except TypeError as e:
        raise ConfigError(f"IFEval {instruction_id}: unexpected kwargs {sorted(args)} ({e})") from None


def load(ev: dict[str, Any], seed: int = 0) -> list[dict[str, Any]]:
    path = task_path(ev, "ifeval", "ifeval_input.jsonl")
    rows = read_jsonl(path)
    covered = [r for r in rows if all(i in CHECKS for i in r.get("instruction_id_list", []))
               and r.get("instruction_id_list")]
    for r in covered:
        r["kwargs"] = r.get("kwargs") or [{} for _ in r["instruction_id_list"]]
        if len(r["kwargs"]) != len(r["instruction_id_list"]):
            raise ConfigError(f"{path}: item {r.get('key')}: kwargs and instruction_id_list differ in length")
    items = pick(covered, task_limit(ev, "ifeval"), seed)
    for it in items:
        it["uncovered_in_file"] = len(rows) - len(covered)
    return items


def score_item(response: str, item: dict[str, Any]) -> list[bool]:
    return [check(i, response, k) for i, k in zip(item["instruction_id_list"], item["kwargs"])]


def run(em: EvalModel, items: list[dict[str, Any]], ev: dict[str, Any]) -> tuple[float, list[dict[str, Any]]]:
    outs = em.generate([em.chat_prompt(it["prompt"]) for it in items], int(ev["max_new_tokens"]["ifeval"]))
    recs = []
    for it, o in zip(items, outs):
        ok = score_item(o, it)
        recs.append({"key": it.get("key"), "prompt": it["prompt"], "instruction_id_list": it["instruction_id_list"],
                     "output": o, "followed": ok, "correct": all(ok)})
    acc = sum(r["correct"] for r in recs) / len(recs) if recs else float("nan")
    return acc, recs
