"""What a signal that talks to an LLM endpoint shares: the response cache folder of the run, its usage.

A signal mixes in :class:`EndpointRuns` and sets ``self.ep`` (an :class:`~siftkit.llm.client.Endpoint`) and
``self.response_cache`` (a folder or None). ``siftkit.signals.compute`` calls ``begin_run(cache_dir)``
before the signal runs and puts ``end_run()`` into the manifest (``usage``). The instance ``begin_run`` was
called on is remembered per fingerprint in this process: the engine keeps one long-lived copy per fingerprint,
and the URL, key, limits and cache folder (not part of the fingerprint) must be the current run's.
"""

from __future__ import annotations

import os
from typing import Any

from ..fs import local_folder
from .cache import ResponseCache
from .client import Client
from .usage import cost, usage_for

_BOUND: dict[str, Any] = {}     # fingerprint -> the signal instance of the run in progress
_OPEN: dict[str, ResponseCache] = {}   # folder -> its open cache (one connection per folder and process)


def open_cache(folder: str) -> ResponseCache:
    key = os.path.abspath(folder)
    if key not in _OPEN or not os.path.exists(_OPEN[key].path):   # (re)open a cache removed meanwhile
        _OPEN[key] = ResponseCache(folder)
    return _OPEN[key]


class EndpointRuns:
    ep: Any                       # the signal's Endpoint
    response_cache: str | None    # (the signal provides fingerprint())

    def begin_run(self, cache_dir: str) -> None:
        self.response_cache = os.path.abspath(self.response_cache or local_folder(cache_dir, "llm"))
        _BOUND[self.fingerprint()] = self
        usage_for(self.fingerprint()).reset()

    def take_usage(self) -> dict[str, Any]:
        """This process's counters for the signal since the last take, reset (a Ray worker returns them
        with each shard's done record)."""
        return usage_for(self.fingerprint()).take()

    def add_usage(self, snap: dict[str, Any]) -> None:
        """Add a worker's ``take_usage()`` to this process's counters (the driver, so ``end_run`` is the
        run's total, as with the local engine)."""
        usage_for(self.fingerprint()).add(snap)

    def end_run(self) -> dict[str, Any]:
        """This run's usage, plus what the response cache holds for this signal (all runs)."""
        u: dict[str, Any] = usage_for(self.fingerprint()).snapshot()
        u["cost"] = cost(u["prompt_tokens"], u["completion_tokens"], self.ep.price_input, self.ep.price_output)
        folder = self.cache_folder()
        if os.path.exists(os.path.join(folder, "responses.sqlite")):
            tot: dict[str, Any] = open_cache(folder).totals(self.fingerprint())
            tot["cost"] = cost(tot["prompt_tokens"], tot["completion_tokens"], self.ep.price_input,
                               self.ep.price_output)
            u["cached_responses"] = tot
        u["model"] = self.ep.model
        if self.ep.price_input is not None or self.ep.price_output is not None:
            u["prices_per_1m"] = {"input": self.ep.price_input, "output": self.ep.price_output}
        return u

    def current(self) -> Any:
        """The instance of the run in progress with this fingerprint (else this one)."""
        return _BOUND.get(self.fingerprint(), self)

    def cache_folder(self) -> str:
        return self.current().response_cache or os.path.join(".siftkit", "llm")

    def make_client(self, who: str, backend: Any = None) -> Client:
        return Client(self.current().ep, open_cache(self.cache_folder()), usage_for(self.fingerprint()),
                      tag=self.fingerprint(), who=who, backend=backend)
