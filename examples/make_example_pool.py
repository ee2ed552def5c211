"""Generate the example pool in examples/pool/ (synthetic records written for siftkit; no third-party data).

The pool mixes the formats siftkit reads (OpenAI messages, ShareGPT, Alpaca, prompt/completion, question/
answer, a header-less TSV), includes exact duplicates and a few bad records on purpose, so the demo shows
format detection, dedup and rejects. Deterministic: rerunning rewrites identical files.

    python examples/make_example_pool.py
"""

from __future__ import annotations

import json
import os
import random

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pool")


def arithmetic(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(12, 999), rng.randint(2, 99)
    op = rng.choice(["+", "-", "*"])
    val = {"+": a + b, "-": a - b, "*": a * b}[op]
    name = rng.choice(["Ana", "Bo", "Chen", "Dara", "Eli", "Femi"])
    item = rng.choice(["apples", "stamps", "marbles", "books", "coins"])
    if op == "+":
        q = f"{name} has {a} {item} and is given {b} more. How many {item} does {name} have now?"
        steps = f"{name} starts with {a} {item} and receives {b}, so {a} + {b} = {val}."
    elif op == "-":
        q = f"{name} has {a} {item} and gives away {b}. How many {item} are left?"
        steps = f"Giving away {b} of {a} leaves {a} - {b} = {val}."
    else:
        q = f"{name} buys {b} boxes with {a} {item} in each. How many {item} is that in total?"
        steps = f"There are {b} boxes of {a}, so {b} x {a} = {val}."
    return q, f"{steps}\nThe answer is {val}."


def conversion(rng: random.Random) -> tuple[str, str]:
    c = rng.randint(-30, 120)
    f = c * 9 / 5 + 32
    return (f"Convert {c} degrees Celsius to Fahrenheit.",
            f"Use F = C x 9/5 + 32. {c} x 9/5 = {c * 9 / 5:g}, plus 32 gives {f:g} degrees Fahrenheit.")


def text_task(rng: random.Random) -> tuple[str, str, str]:
    words = rng.sample(["river", "lantern", "copper", "meadow", "orbit", "velvet", "harbor", "cinder",
                        "thistle", "quartz", "willow", "ember", "falcon", "garnet", "hollow"], k=rng.randint(3, 7))
    kind = rng.choice(["sort", "reverse", "count", "upper"])
    text = ", ".join(words)
    if kind == "sort":
        return "Sort the following words alphabetically.", text, ", ".join(sorted(words))
    if kind == "reverse":
        return "Reverse the order of the words in this list.", text, ", ".join(reversed(words))
    if kind == "count":
        total = sum(len(w) for w in words)
        detail = " + ".join(str(len(w)) for w in words)
        return ("Count the letters in all of these words together.", text,
                f"The words have {detail} letters, which is {total} letters in total.")
    return "Write these words in capital letters.", text, ", ".join(w.upper() for w in words)


def long_answer(rng: random.Random, topic: str) -> str:
    points = {
        "testing": ["Write a failing test that shows the bug before fixing it.",
                    "Keep unit tests fast so they run on every change.",
                    "Test behaviour through public interfaces, not private details.",
                    "Use fixed seeds so random tests are reproducible.",
                    "Check error messages, not only the happy path."],
        "data": ["Deduplicate before sampling, or duplicates take budget twice.",
                 "Keep the original records so outputs can be traced back.",
                 "Record the seed and configuration of every selection.",
                 "Look at the length distribution before and after filtering.",
                 "Balance sources so one large dataset does not dominate."],
        "writing": ["Lead with the conclusion, then give the reasons.",
                    "Prefer short sentences and concrete examples.",
                    "Define a term the first time you use it.",
                    "Cut words that do not change the meaning.",
                    "Read the text aloud to find awkward sentences."],
    }[topic]
    k = rng.randint(2, 5)
    chosen = rng.sample(points, k)
    return "Here are a few suggestions:\n" + "\n".join(f"{i + 1}. {p}" for i, p in enumerate(chosen))


def _out(source: str, name: str) -> str:
    """One folder per dataset: siftkit names each record's source after its folder."""
    os.makedirs(os.path.join(HERE, source), exist_ok=True)
    return os.path.join(HERE, source, name)


def main() -> None:
    rng = random.Random(20261121)
    os.makedirs(HERE, exist_ok=True)
    # 1. OpenAI messages (JSONL), some multi-turn, one system prompt, one bad line.
    with open(_out("math_chat", "chat_messages.jsonl"), "w", encoding="utf-8") as fh:
        for i in range(120):
            q, a = arithmetic(rng)
            msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            if i % 5 == 0:
                msgs = [{"role": "system", "content": "You are a careful math tutor."}] + msgs
            if i % 7 == 0:
                q2, a2 = conversion(rng)
                msgs += [{"role": "user", "content": "Thanks. " + q2}, {"role": "assistant", "content": a2}]
            fh.write(json.dumps({"messages": msgs}, ensure_ascii=False) + "\n")
            if i == 60:
                fh.write('{"messages": [{"role": "user", "content": "unterminated record"\n')
    # 2. Alpaca (JSON array) with exact duplicates and one empty output.
    recs = []
    for i in range(150):
        instr, inp, out = text_task(rng)
        recs.append({"instruction": instr, "input": inp, "output": out})
    recs += [dict(r) for r in recs[:12]]  # exact duplicates
    recs.append({"instruction": "Summarise the text.", "input": "", "output": ""})
    with open(_out("word_tasks", "tasks_alpaca.json"), "w", encoding="utf-8") as fh:
        json.dump(recs, fh, ensure_ascii=False, indent=1)
    # 3. ShareGPT conversations (JSONL), longer advice answers.
    with open(_out("advice", "advice_sharegpt.jsonl"), "w", encoding="utf-8") as fh:
        for i in range(80):
            topic = rng.choice(["testing", "data", "writing"])
            conv = [{"from": "human", "value": f"Can you give me advice on {topic}?"},
                    {"from": "gpt", "value": long_answer(rng, topic)}]
            if i % 4 == 0:
                conv += [{"from": "human", "value": "Which one matters most?"},
                         {"from": "gpt", "value": "Start with the first one; the rest build on it."}]
            fh.write(json.dumps({"conversations": conv}, ensure_ascii=False) + "\n")
    # 4. prompt/completion (JSONL).
    with open(_out("unit_conversion", "convert_prompt_completion.jsonl"), "w", encoding="utf-8") as fh:
        for _ in range(60):
            q, a = conversion(rng)
            fh.write(json.dumps({"prompt": q, "completion": a}) + "\n")
    # 5. A header-less TSV beside the pool: question, final answer, worked solution (needs a mapping).
    with open(os.path.join(os.path.dirname(HERE), "math_cot.tsv"), "w", encoding="utf-8") as fh:
        for _ in range(60):
            q, a = arithmetic(rng)
            steps, final = a.rsplit("\n", 1)
            fh.write(f"{q}\t{final.removeprefix('The answer is ').rstrip('.')}\t{steps}\n")


if __name__ == "__main__":
    main()
