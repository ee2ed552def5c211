"""Data generation with an LLM endpoint: Evol-Instruct style evolution of instructions and responses
(``evolve``). Prompts are siftkit's own, in ``prompts.yaml`` (overridable). See docs/generate.md.

Sits above ``llm`` (the client, cache and usage) and ``io`` (readers and writers), below ``api``/``cli``.
"""

from .evolve import REASONS, EvolveConfig, eliminate, evolve
from .prompts import load_prompts

__all__ = ["REASONS", "EvolveConfig", "eliminate", "evolve", "load_prompts"]
