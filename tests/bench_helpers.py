"""Tiny inputs for the bench tests: a pool, eval files in the shared formats, and a config dict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TOPICS = ["the sea", "a cat", "bread", "rain", "the moon", "trees", "a train", "music", "snow", "coffee"]


def write_pool(folder: Path, n: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        t = TOPICS[i % len(TOPICS)]
        answer = " ".join([f"Here is a fact about {t}."] * (1 + i % 5))
        rows.append({"messages": [{"role": "user", "content": f"Tell me about {t} (#{i})."},
                                  {"role": "assistant", "content": answer}]})
    with open(folder / "chat.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    with open(folder / "tasks.json", "w", encoding="utf-8") as fh:
        json.dump([{"instruction": f"Add {i} and {i + 1}.", "input": "", "output": f"{i} + {i + 1} = {2 * i + 1}"}
                   for i in range(n // 2)], fh)
    return folder


def write_eval(folder: Path) -> Path:
    (folder / "mmlu" / "test").mkdir(parents=True, exist_ok=True)
    (folder / "mmlu" / "dev").mkdir(parents=True, exist_ok=True)
    rows = [["What is 2 + 2?", "3", "4", "5", "6", "1"], ["Which is a colour?", "red", "dog", "run", "six", "A"],
            ["What is the capital of France?", "Rome", "Paris", "Oslo", "Bern", "B"],
            ["Which number is even?", "1", "3", "8", "9", "2"], ["Sky colour on a clear day?", "blue", "green",
                                                                "black", "pink", "0"],
            ["How many legs has a cat?", "two", "four", "six", "eight", "1"]]
    with open(folder / "mmlu" / "test" / "misc_test.csv", "w", encoding="utf-8") as fh:
        fh.write("question,choice0,choice1,choice2,choice3,answer\n")
        fh.writelines(",".join(r) + "\n" for r in rows)
    with open(folder / "mmlu" / "dev" / "misc_dev.csv", "w", encoding="utf-8") as fh:
        fh.write("What is 1 + 1?,1,2,3,4,B\n")
    with open(folder / "gsm8k_test.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"question": f"Tom has {i} apples and buys 2 more. How many?",
                                 "answer": f"{i} + 2 = {i + 2}\n#### {i + 2}"}) + "\n" for i in range(6))
    (folder / "bbh").mkdir(exist_ok=True)
    for task, ex in (("boolean_expressions", [{"input": "True and False is", "target": "False"},
                                              {"input": "not False is", "target": "True"},
                                              {"input": "True or False is", "target": "True"}]),
                     ("date_understanding", [{"input": "Pick a day. Options: (A) Monday (B) Sunday", "target": "(A)"},
                                             {"input": "Pick a month. Options: (A) May (B) June", "target": "(B)"}])):
        with open(folder / "bbh" / f"{task}.json", "w", encoding="utf-8") as fh:
            json.dump({"canary": "x", "examples": ex}, fh)
    with open(folder / "ifeval_input.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"key": i, "prompt": f"Write about the sea ({i}).", "instruction_id_list": ids,
                                 "kwargs": kw}) + "\n" for i, (ids, kw) in enumerate([(["punctuation:no_comma"], [{}]),
                                       (["change_case:english_lowercase"], [{}]),
                                       (["language:response_language"], [{"language": "de"}]),
                                       (["length_constraints:number_words"], [{"relation": "less than",
                                                                               "num_words": 40}]),
                                       (["keywords:existence", "punctuation:no_comma"], [{"keywords": ["sea"]}, {}]),
                                       (["startend:quotation"], [{}])]))
    return folder


def config(tmp: Path, model: Path, pool: Path, evals: Path, **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "pool": {"inputs": [str(pool)], "heldout": 5},
        "budget": 8,
        "base_model": str(model),
        "random_seeds": 2,
        "methods": {"longest": {"steps": [{"select": "top", "by": "tokens_response"}]}},
        "train": {"epochs": 1, "batch_size": 4, "micro_batch_size": 2, "max_length": 96, "lr": 1e-3},
        "eval": {"tasks": ["mmlu", "gsm8k", "bbh", "ifeval", "heldout"], "limit": 5, "data_dir": str(evals),
                 "max_new_tokens": {"gsm8k": 6, "bbh": 4, "ifeval": 6}, "batch_size": 4},
        "output": str(tmp / "out"),
    }
    cfg.update(over)
    return cfg


def tiny_model_and_chat_pool(root: Path, n: int = 40) -> tuple[str, str]:
    """A tiny random chat model folder and a folder of ``n`` chat conversations (the pool of ``write_pool``
    without its tasks file): for methods that fine-tune briefly (DiverseEvol, Cherry)."""
    from scoring_tiny import build_tiny_lm

    model = str(build_tiny_lm(root / "tiny"))
    pool_dir = write_pool(root / "pool", n=n)
    (pool_dir / "tasks.json").unlink()
    return model, str(pool_dir)
