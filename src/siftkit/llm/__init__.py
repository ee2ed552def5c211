"""LLM services: one cached, retried, cost-accounted client for OpenAI-compatible servers (``client``), the
on-disk response cache (``cache``), usage counters (``usage``), structured answers (``structured``), judge
rubrics (``rubrics``), vLLM's offline engine (``vllm_offline``) and a local llama.cpp server
(``localserver``). Imports only siftkit's foundations; the ``judge`` signal lives in ``siftkit.scoring``.
See docs/judge.md."""

from .cache import ResponseCache, request_key
from .client import Client, Endpoint, Outcome
from .usage import Usage, cost, usage_for

__all__ = ["Client", "Endpoint", "Outcome", "ResponseCache", "Usage", "cost", "request_key", "usage_for"]
