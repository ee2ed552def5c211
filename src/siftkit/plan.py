"""What a run computes, decided from the validated config alone: its selectors and the signals they need.

``plan_signals`` lists every column of the configured and cheap signals without computing any; the pipeline
runs with the plan, ``preflight`` checks it before anything is read.
"""

from __future__ import annotations

from typing import Any

from .config import RunConfig, StepSpec
from .errors import ConfigError
from .registry import make, selector_class
from .selectors.base import Selector
from .signals.base import Signal
from .signals.compute import build_signal

# Columns every pool has: selectors may read them without a signal.
POOL_COLUMNS = ("id", "source", "file", "row", "line")


def make_selector(step: StepSpec) -> Selector:
    return make(selector_class(step.selector), dict(step.params), f"{step.where}: {step.selector}")


def signal_providers(cfg: RunConfig) -> list[Signal]:
    """Signals that may provide columns: the configured ones first, then the cheap defaults."""
    sigs = [build_signal(s) for s in cfg.signals]
    names = {s.name for s in sigs}
    defaults: list[Any] = ["text_stats", "exact_hash", "compression", {"name": "tokens", "tokenizer": cfg.tokenizer},
                           {"name": "special_tokens", "tokenizer": cfg.tokenizer}, "quality", "repetition", "lang"]
    for d in defaults:
        n = d if isinstance(d, str) else d["name"]
        if n not in names:
            sigs.append(build_signal(d))
    return sigs


def plan_signals(cfg: RunConfig, selectors: list[Selector]) -> list[Signal]:
    """The signals to compute: all configured ones plus those providing the columns selectors need."""
    providers = signal_providers(cfg)
    col_to_sig: dict[str, Signal] = {}
    for s in providers:
        for c in s.columns():
            col_to_sig.setdefault(c, s)
    chosen: list[Signal] = [build_signal(s) for s in cfg.signals]
    chosen_fp = {s.fingerprint() for s in chosen}
    for sel in selectors:
        for col in sel.needs():
            if col in POOL_COLUMNS:
                continue
            sig = col_to_sig.get(col)
            if sig is None:
                raise ConfigError(f"{sel.name}: no signal provides column {col!r}. Cheap columns: "
                                  f"{', '.join(sorted(col_to_sig))}; pool columns: {', '.join(POOL_COLUMNS)}; "
                                  f"model signals must be listed under 'signals' (see `siftkit list signals`)")
            if sig.fingerprint() not in chosen_fp:
                chosen.append(sig)
                chosen_fp.add(sig.fingerprint())
    from .selectors.expr import kind_of_type

    kinds = {c: kind_of_type(t) for s in providers for c, t in s.columns().items()}
    for sel in selectors:
        sel.check_columns(kinds)   # kinds and a one-row trial, before any signal is computed
    return chosen
