"""Name -> class registries for signals, selectors and derivations, with lazy import of their modules.

Modules are imported only when a name is looked up, so heavy dependencies (torch, faiss, ...) stay out of
the core import path. To add a signal, selector or derivation (a model built from the pool before scoring,
``siftkit.derive``): write one module, decorate the class with ``@register_signal("name")`` /
``@register_selector("name")`` / ``@register_derivation("name")`` and list the module in ``*_MODULES`` below.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")

# name -> module that defines it (imported on first use)
SIGNAL_MODULES: dict[str, str] = {
    "text_stats": "siftkit.signals.text",
    "exact_hash": "siftkit.signals.text",
    "compression": "siftkit.signals.text",
    "tokens": "siftkit.signals.tokens",
    "special_tokens": "siftkit.signals.special_tokens",
    "embedding": "siftkit.signals.embeddings",
    "lm_loss": "siftkit.scoring.lm_loss",
    "deita": "siftkit.scoring.deita",
    "selectit": "siftkit.scoring.selectit",
    "knowledge": "siftkit.scoring.knowledge",
    "instag": "siftkit.scoring.instag",
    "less_grads": "siftkit.less.signal",
    "judge": "siftkit.scoring.judge",
    "reward": "siftkit.scoring.reward",
    "quality": "siftkit.signals.quality",
    "repetition": "siftkit.signals.repetition",
    "lang": "siftkit.signals.lang",
}
SELECTOR_MODULES: dict[str, str] = {
    "random": "siftkit.selectors.random",
    "top": "siftkit.selectors.top",
    "bottom": "siftkit.selectors.top",
    "filter": "siftkit.selectors.filter",
    "dedup": "siftkit.selectors.dedup",
    "stratified": "siftkit.selectors.stratified",
    "kmeans": "siftkit.selectors.kmeans",
    "repr-filter": "siftkit.selectors.repr_filter",
    "k-center": "siftkit.selectors.kcenter",
    "facility-location": "siftkit.selectors.facility_location",
    "minhash-dedup": "siftkit.selectors.near_dedup",
    "semdedup": "siftkit.selectors.semdedup",
    "semdedup-kept": "siftkit.selectors.semdedup",
    "ifd-filter": "siftkit.selectors.ifd_filter",
    "zip": "siftkit.selectors.zip",
    "instag-coverage": "siftkit.selectors.instag",
    "rds": "siftkit.selectors.rds",
    "diverseevol": "siftkit.selectors.diverseevol",
    "less": "siftkit.selectors.less",
    "decontaminate": "siftkit.selectors.decontaminate",
}
DERIVATION_MODULES: dict[str, str] = {
    "cherry-brief-experience": "siftkit.derive.cherry",
}
# Older recipe spellings: a signal option that declares a derived model inline -> its derivation.
LEGACY_SIGNAL_OPTIONS: dict[str, str] = {"brief_experience": "cherry-brief-experience"}

_SIGNALS: dict[str, type] = {}
_SELECTORS: dict[str, type] = {}
_DERIVATIONS: dict[str, type] = {}


def _registrar(table: dict[str, type]) -> Callable[[str], Callable[[type[T]], type[T]]]:
    def register(name: str) -> Callable[[type[T]], type[T]]:
        def deco(cls: type[T]) -> type[T]:
            cls.name = name  # type: ignore[attr-defined]
            table[name] = cls
            return cls
        return deco
    return register


register_signal = _registrar(_SIGNALS)
register_selector = _registrar(_SELECTORS)
register_derivation = _registrar(_DERIVATIONS)


def _lookup(kind: str, name: str, table: dict[str, type], modules: dict[str, str]) -> type:
    if name not in table and name in modules:
        importlib.import_module(modules[name])
    if name not in table:
        known = ", ".join(sorted(set(modules) | set(table)))
        raise ConfigError(f"unknown {kind} {name!r}; known: {known}")
    return table[name]


def signal_class(name: str) -> type:
    return _lookup("signal", name, _SIGNALS, SIGNAL_MODULES)


def selector_class(name: str) -> type:
    return _lookup("selector", name, _SELECTORS, SELECTOR_MODULES)


def derivation_class(name: str) -> type:
    return _lookup("derivation", name, _DERIVATIONS, DERIVATION_MODULES)


def make(cls: type, params: dict[str, Any], where: str) -> Any:
    """Instantiate with keyword params; unknown or bad params become a ConfigError naming ``where``."""
    try:
        return cls(**params)
    except TypeError as e:
        raise ConfigError(f"{where}: " + re.sub(r"^[\w.]*__init__\(\) ", "", str(e))) from None
    except ConfigError as e:                    # a constructor's own check: say which step or signal it was
        msg = str(e)
        if msg.startswith(where):
            raise
        name = where.rsplit(": ", 1)[-1]
        if msg.startswith(f"{name}: "):         # "kmeans: k must be ..." under "steps[0].select: kmeans"
            msg = msg[len(name) + 2:]
        raise ConfigError(f"{where}: {msg}") from None


def signal_names() -> list[str]:
    return sorted(set(SIGNAL_MODULES) | set(_SIGNALS))


def selector_names() -> list[str]:
    return sorted(set(SELECTOR_MODULES) | set(_SELECTORS))


def derivation_names() -> list[str]:
    return sorted(set(DERIVATION_MODULES) | set(_DERIVATIONS))
