"""Derived models: models built from the pool before scoring, as one pipeline stage.

A recipe declares them under ``models`` and signals name them as their ``model``::

    models:
      experienced: {derive: cherry-brief-experience, base: Qwen/Qwen2.5-0.5B, clusters: 100}
    signals:
      - {name: lm_loss, model: experienced}

``check_models`` validates the declarations when the recipe is read; ``resolve_models`` (run by the pipeline
after reading the pool, before any signal) builds each model, or reuses it from the cache by fingerprint,
and points the signals that name it at the result. Each derivation is one module registered in
``siftkit.registry.DERIVATION_MODULES`` (``cherry-brief-experience``: :mod:`.cherry`); this stage knows no
method. Older inline spellings (``{name: lm_loss, model: M, brief_experience: {...}}``) are mapped to their
derivation through ``registry.LEGACY_SIGNAL_OPTIONS`` and keep working.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import ConfigError
from ..registry import LEGACY_SIGNAL_OPTIONS, derivation_class, derivation_names, make


def _legacy_key(spec: Any) -> str | None:
    if not isinstance(spec, dict):
        return None
    return next((k for k in LEGACY_SIGNAL_OPTIONS if spec.get(k) not in (None, False)), None)


def build_derivation(spec: Any, where: str) -> Any:
    """The derivation object for one ``models`` entry (``{derive: NAME, **params}``), validated."""
    if not isinstance(spec, dict) or not isinstance(spec.get("derive"), str):
        raise ConfigError(f"{where}: expected a mapping like {{derive: NAME, base: MODEL, ...}}; "
                          f"derivations: {', '.join(derivation_names())}")
    try:
        cls = derivation_class(spec["derive"])
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return make(cls, {k: v for k, v in spec.items() if k != "derive"}, f"{where}: {spec['derive']}")


def check_models(models: Any, signals: list[Any], source: str) -> dict[str, dict[str, Any]]:
    """Validate a recipe's ``models`` (name -> ``{derive: NAME, **params}``) against its ``signals``:
    every parameter now, and every declared model must be named by some signal's ``model``."""
    if models is None:
        return {}
    if not isinstance(models, dict):
        raise ConfigError(f"{source}: 'models' must be a mapping of name -> {{derive: NAME, ...}}")
    used = {s.get("model") for s in signals if isinstance(s, dict)}
    for name, spec in models.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{source}: models: a model name must be a non-empty string, not {name!r}")
        build_derivation(spec, f"{source}: models.{name}")
        if name not in used:
            raise ConfigError(f"{source}: models.{name} is declared but no signal uses it "
                              f"(give a signal model: {name})")
    return models


def check_signal(spec: Any, where: str) -> Any:
    """A signal spec, with an older inline derived-model spelling (e.g. ``brief_experience``) validated."""
    key = next((k for k in LEGACY_SIGNAL_OPTIONS if isinstance(spec, dict) and k in spec), None)
    if key is None:
        return spec
    return derivation_class(LEGACY_SIGNAL_OPTIONS[key]).check_signal(spec, where)


def needs_resolving(cfg: Any) -> bool:
    return bool(getattr(cfg, "models", None)) or any(_legacy_key(s) for s in cfg.signals)


def resolve_models(cfg: Any, pool: Any, workers: int = 1) -> Any:
    """The config with every signal that names a derived model (or declares one inline, in the older
    spelling) pointed at that model, built now or reused from the cache; ``cfg`` itself when there is none.
    ``pool``: the pool table. ``raw`` (the recipe as given) is kept."""
    if not needs_resolving(cfg):
        return cfg
    models = dict(getattr(cfg, "models", None) or {})
    built: dict[str, str] = {}

    def build(name: str, spec: dict[str, Any]) -> str:
        if name not in built:
            d = build_derivation(spec, f"models.{name}")
            built[name] = d.build(pool, cache_dir=cfg.cache_dir, workers=workers, engine=cfg.engine)
        return built[name]

    out: list[Any] = []
    for i, s in enumerate(cfg.signals):
        key = _legacy_key(s)
        if key is not None:
            cls = derivation_class(LEGACY_SIGNAL_OPTIONS[key])
            params, scored = cls.from_signal(cls.check_signal(s, f"signals[{i}]"))
            d = make(cls, params, f"signals[{i}]: {cls.name}")
            out.append({**scored, "model": d.build(pool, cache_dir=cfg.cache_dir, workers=workers,
                                                   engine=cfg.engine)})
        elif isinstance(s, dict) and isinstance(s.get("model"), str) and s["model"] in models:
            out.append({**s, "model": build(s["model"], models[s["model"]])})
        else:
            out.append(s)
    return dataclasses.replace(cfg, signals=out)
