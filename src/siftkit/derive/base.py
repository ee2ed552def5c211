"""The interface of a derivation: a model built from the pool before any signal is scored with it."""

from __future__ import annotations

from typing import Any, ClassVar


class Derivation:
    """One way to build a model from the pool (registered with ``@register_derivation("name")``).

    ``__init__(**params)`` validates the recipe's parameters (a ConfigError names the bad one);
    ``build`` makes the model, or reuses it from ``cache_dir`` (keyed by a fingerprint of every input), and
    returns what signals use as their ``model`` (a folder). A derivation may also accept an older inline
    spelling on a signal (``registry.LEGACY_SIGNAL_OPTIONS``) through ``check_signal`` / ``from_signal``.
    """

    name = "derivation"
    needs: ClassVar[dict[str, str]] = {}   # import name -> what it is for (checked by preflight before any reading)

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def build(self, pool: Any, *, cache_dir: str, workers: int = 1, engine: str = "local") -> str:
        raise NotImplementedError

    @classmethod
    def check_signal(cls, spec: dict[str, Any], where: str) -> dict[str, Any]:
        """A signal spec in the older inline spelling, validated (and completed) now."""
        raise NotImplementedError

    @classmethod
    def from_signal(cls, spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(this derivation's parameters, the signal spec to score with, its ``model`` still to fill in)
        for a signal in the older inline spelling (already checked by ``check_signal``)."""
        raise NotImplementedError
