"""Judge rubrics: siftkit's own (``rubrics.yaml`` beside this file) or yours, and the prompts built from them.

A rubric names its dimensions (one score column each), its integer scale, what the judge is shown
(``target: query``, ``pair``, or ``reference``: the request, a reference answer and the answer, for test
sets in the bench), a system message and the task. ``load_rubric(name, file, inline)`` returns
one, checked; ``messages(rubric, history, request, answer, rationale_chars)`` the chat messages of a
judge request. The answer format line is always generated from the dimensions and scale, so a rubric can
never ask for something the parser does not read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..yamlfile import load_yaml_mapping

BUILTIN = os.path.join(os.path.dirname(__file__), "rubrics.yaml")
TARGETS = ("query", "pair", "reference")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Rubric:
    name: str
    doc: str
    target: str
    lo: int
    hi: int
    system: str
    task: str
    dimensions: tuple[tuple[str, str], ...]

    @property
    def keys(self) -> list[str]:
        return [d for d, _ in self.dimensions]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target, "scale": [self.lo, self.hi], "system": self.system,
                "task": self.task, "dimensions": dict(self.dimensions)}


def _read(path: str) -> dict[str, Any]:
    return load_yaml_mapping(path, "rubrics file")


def builtin_rubrics() -> dict[str, dict[str, Any]]:
    return _read(BUILTIN)


def check(name: str, d: Any, where: str) -> Rubric:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: rubric {name!r} must be a mapping")
    unknown = set(d) - {"doc", "target", "scale", "system", "task", "dimensions", "name"}
    if unknown:
        raise ConfigError(f"{where}: rubric {name!r} has unknown keys {sorted(unknown)}")
    target = d.get("target", "pair")
    if target not in TARGETS:
        raise ConfigError(f"{where}: rubric {name!r}: target must be 'query', 'pair' or 'reference', got {target!r}")
    scale = d.get("scale", [1, 5])
    if (not isinstance(scale, (list, tuple)) or len(scale) != 2 or not all(isinstance(x, int) for x in scale)
            or scale[0] >= scale[1]):
        raise ConfigError(f"{where}: rubric {name!r}: scale must be [low, high] integers with low < high")
    dims = d.get("dimensions")
    if not isinstance(dims, dict) or not dims:
        raise ConfigError(f"{where}: rubric {name!r} needs dimensions: {{name: description}}")
    for k, v in dims.items():
        if not isinstance(k, str) or not _NAME.match(k) or k == "rationale":
            raise ConfigError(f"{where}: rubric {name!r}: dimension {k!r} must be a lower-case identifier "
                              "(not 'rationale')")
        if not isinstance(v, str) or not v.strip():
            raise ConfigError(f"{where}: rubric {name!r}: dimension {k!r} needs a description")
    for k in ("system", "task"):
        if not isinstance(d.get(k), str) or not d[k].strip():
            raise ConfigError(f"{where}: rubric {name!r} needs a {k!r} text")
    return Rubric(name, str(d.get("doc", "")), target, int(scale[0]), int(scale[1]), d["system"].strip(),
                  d["task"].strip(), tuple((k, " ".join(v.split())) for k, v in dims.items()))


def load_rubric(name: str | None, file: str | None = None, inline: dict[str, Any] | None = None,
                where: str = "judge") -> Rubric:
    """The rubric ``name`` from ``file`` (else the built-in set), or the ``inline`` mapping."""
    if inline is not None:
        return check(str(inline.get("name") or name or "custom"), inline, where)
    table = _read(file) if file else builtin_rubrics()
    if name not in table:
        raise ConfigError(f"{where}: unknown rubric {name!r}; known: {', '.join(sorted(table))}"
                          + (f" (in {file})" if file else ""))
    return check(str(name), table[name], where)


def _block(tag: str, text: str) -> str:
    return f"<{tag}>\n{text}\n</{tag}>"


def messages(r: Rubric, history: list[dict[str, str]], request: str, answer: str | None,
             rationale_chars: int, reference: str | None = None) -> list[dict[str, str]]:
    """Chat messages of one judge request (our wording); ``reference`` for ``target: reference`` rubrics."""
    parts = [r.task]
    if history:
        parts.append(_block("earlier_conversation",
                            "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in history)))
    parts.append(_block("request", request))
    if r.target == "reference":
        parts.append(_block("reference_answer", reference or ""))
    if r.target in ("pair", "reference"):
        parts.append(_block("answer", answer or ""))
    crit = "\n".join(f"- {k}: {v}" for k, v in r.dimensions)
    parts.append(f"Rate each of these from {r.lo} to {r.hi} (whole numbers):\n{crit}")
    fields = ", ".join(f'"{k}": <{r.lo}-{r.hi}>' for k in r.keys)
    if rationale_chars > 0:
        fields += f', "rationale": "<why, at most {rationale_chars} characters>"'
    parts.append(f"Reply with only this JSON object and nothing else: {{{fields}}}")
    return [{"role": "system", "content": r.system}, {"role": "user", "content": "\n\n".join(parts)}]


def as_prompt(msgs: list[dict[str, str]]) -> str:
    """Plain-text prompt for ``/v1/completions`` (no chat template: the server sees this text as is)."""
    return "\n\n".join(m["content"] for m in msgs) + "\n\nJSON:"
