"""Pre-flight checks: everything a run needs, checked before any record is read or any signal computed.

A run that needs an optional package (faiss for k-means, sentence-transformers, torch/transformers for model
signals, datasets for hub inputs, ray for ``--engine ray``) must not read a million records and compute
signals for minutes before it dies on an ``import``. ``preflight(cfg)`` looks at the validated config only:

- **extras**: each selector and signal declares the optional packages it needs (class attribute ``requires``
  and ``requires_for``, or a ``requirements()`` method when they depend on parameters, e.g. the embedding
  backend); they are looked up with ``importlib.util.find_spec`` (nothing heavy is imported). A missing one
  is a :class:`MissingExtraError` (exit 2) naming what needs it and the ``pip install`` that provides it;
- **columns**: every column a step reads (``--by``, filter expressions, ``--stratify``) must be a pool column
  or a column of a planned signal (``plan.plan_signals``, which lists columns without computing);
- **local files**: a model, tokenizer or target path that is clearly local (absolute, ``./``, ``~``, a
  ``.gguf``/``.json`` file, more than one ``/``) must exist. Hub names are left to load time.

Called by ``pipeline.run_selection`` (so by ``siftkit select``/``run`` and ``siftkit.select``/``run``),
``siftkit.score``/``inspect`` and ``siftkit bench``, each before reading the pool.
"""

from __future__ import annotations

import glob as _glob
import importlib.util
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import ConfigError, MissingDependencyError, SiftkitError
from .registry import LEGACY_SIGNAL_OPTIONS, derivation_class

# import name -> (name shown in messages, pip package)
PACKAGES: dict[str, tuple[str, str]] = {
    "faiss": ("faiss", "faiss-cpu"),
    "sentence_transformers": ("sentence-transformers", "sentence-transformers"),
    "torch": ("torch", "torch"),
    "transformers": ("transformers", "transformers"),
    "gguf": ("gguf", "gguf"),
    "accelerate": ("accelerate", "accelerate"),
    "datasets": ("datasets", "datasets"),
    "huggingface_hub": ("huggingface_hub", "huggingface_hub"),
    "ray": ("ray", "ray[data]"),
    "trl": ("trl", "trl"),
    "peft": ("peft", "peft"),
    "scipy": ("scipy", "scipy"),
    "pandas": ("pandas", "pandas"),
    "vllm": ("vllm", "vllm"),
    "bitsandbytes": ("bitsandbytes", "bitsandbytes"),
    "httpx": ("httpx", "httpx"),
    "xllamacpp": ("xllamacpp", "xllamacpp"),
    "py3langid": ("py3langid", "py3langid"),
    "lingua": ("lingua", "lingua-language-detector"),
    "rensa": ("rensa", "rensa"),
}
# siftkit's extras (pyproject.toml [project.optional-dependencies]) by import name; a test keeps them in step.
EXTRAS: dict[str, tuple[str, ...]] = {
    "hf": ("datasets", "huggingface_hub"),
    "embed": ("faiss", "sentence_transformers", "torch"),
    "model": ("torch", "transformers", "gguf", "accelerate"),
    "ray": ("ray",),
    "bench": ("torch", "transformers", "trl", "peft", "datasets", "scipy", "accelerate", "gguf"),
    "llm": ("httpx", "xllamacpp"),
    "clean": ("py3langid", "lingua"),
    "minhash": ("rensa",),
}


class MissingExtraError(MissingDependencyError):
    """One or more optional packages a configured step needs are not installed (exit 2)."""

    def __init__(self, message: str, missing: Sequence[str] = ()):
        SiftkitError.__init__(self, message)
        self.missing = list(missing)


def have(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (``sys.modules[name] = None`` blocks it)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def install_hint(needed: Iterable[str], missing: Sequence[str]) -> str:
    """``pip install 'siftkit[embed]'``: the smallest extra that holds everything ``needed`` (else the one
    holding the most of ``missing``); packages in no extra are named as themselves."""
    needed = set(needed) | set(missing)
    in_extras = {m for m in missing if any(m in pk for pk in EXTRAS.values())}
    parts: list[str] = []
    if in_extras:
        covering = [e for e, pk in EXTRAS.items() if (needed & set().union(*EXTRAS.values())) <= set(pk)]
        if not covering:
            covering = [max(EXTRAS, key=lambda e: (len(in_extras & set(EXTRAS[e])), -len(EXTRAS[e])))]
        extra = min(covering, key=lambda e: len(EXTRAS[e]))
        parts.append(f"'siftkit[{extra}]'")
        rest = [m for m in in_extras if m not in EXTRAS[extra]]
        parts += [PACKAGES.get(m, (m, m))[1] for m in sorted(rest)]
    parts += [PACKAGES.get(m, (m, m))[1] for m in missing if m not in in_extras]
    return "pip install " + " ".join(parts)


def missing_message(who: str, needs: Mapping[str, str]) -> tuple[str, list[str]] | None:
    """(``"preset 'x' needs faiss (k-means): pip install 'siftkit[embed]'"``, missing import names), or None
    when everything in ``needs`` (import name -> what it is for) is installed."""
    missing = [m for m in needs if not have(m)]
    if not missing:
        return None
    by_purpose: dict[str, list[str]] = {}
    for m in missing:
        by_purpose.setdefault(needs[m], []).append(PACKAGES.get(m, (m, m))[0])
    what = ", ".join(", ".join(names) + (f" ({p})" if p else "") for p, names in by_purpose.items())
    return f"{who} needs {what}: {install_hint(needs, missing)}", missing


def require(needs: Mapping[str, str] | Sequence[str], who: str, purpose: str = "") -> None:
    """Raise :class:`MissingExtraError` unless every module in ``needs`` (import names, or a mapping of
    import name -> what it is for) is installed."""
    if not isinstance(needs, Mapping):
        needs = {m: purpose for m in needs}
    _raise([missing_message(who, needs)])


# ---------------------------------------------------------------- local paths

def looks_local(ref: str) -> bool:
    """A model/tokenizer reference that can only be a local path (a hub id is ``name`` or ``org/name``)."""
    return (ref.startswith(("/", "./", "../", "~", ".\\")) or ref.count("/") > 1 or "\\" in ref
            or ref.lower().endswith((".gguf", ".json", ".safetensors", ".bin")))


def check_local(ref: Any, who: str, what: str = "model") -> None:
    if not isinstance(ref, str) or not ref or ref == "default":
        return
    if looks_local(ref) and not os.path.exists(os.path.expanduser(ref)):
        raise ConfigError(f"{who}: {what} {ref!r} not found (no such file or folder; a hub name looks like "
                          f"'org/name')")


def check_input_paths(paths: Iterable[Any], who: str, what: str = "targets") -> None:
    for p in paths:
        if isinstance(p, Mapping):
            p = p.get("path")
        if not isinstance(p, str) or p.startswith("hf:"):
            continue
        from . import fs

        if fs.is_remote(p):
            try:
                found = fs.glob(p) if any(ch in p for ch in "*?[") else fs.exists(p)
            except OSError as e:
                raise fs.fs_error(p, e, f"{who}: {what}: cannot read") from None
            if not found:
                raise ConfigError(f"{who}: {what}: {fs.display(p)!r} not found (no such object, folder or match)")
            continue
        p = fs.local_path(p)
        if any(ch in p for ch in "*?["):
            if not _glob.glob(os.path.expanduser(p), recursive=True):
                raise ConfigError(f"{who}: {what}: no files match the pattern {p!r}")
        elif not os.path.exists(os.path.expanduser(p)):
            raise ConfigError(f"{who}: {what}: {p!r} not found (no such file or folder)")


MODEL_ATTRS = ("model", "complexity_model", "quality_model", "checkpoint")


def _check_object(obj: Any, who: str, problems: list[tuple[str, list[str]] | None],
                  also: Mapping[str, str] | None = None) -> None:
    """Extras (collected into ``problems``, with ``also`` needed by the same step) and local paths (raised at
    once) of one signal or selector."""
    needs = dict(obj.requirements() if hasattr(obj, "requirements") else {})
    for m, why in (also or {}).items():
        needs.setdefault(m, why)
    problems.append(missing_message(who, needs))
    for attr in MODEL_ATTRS:
        check_local(getattr(obj, attr, None), who, attr.replace("_", " "))
    if getattr(obj, "name", None) == "tokens":
        check_local(getattr(obj, "tokenizer", None), who, "tokenizer")
    targets = getattr(obj, "targets", None)
    if isinstance(targets, list):
        check_input_paths(targets, who)


def _embedding_of(sel: Any) -> Any:
    """The embedding signal a selector will load through the vector loader, if any."""
    spec = getattr(sel, "embedding", None)
    if not isinstance(spec, dict):
        return None
    from .signals.compute import build_signal

    try:
        return build_signal(spec)
    except ConfigError:
        return None   # not a registered vector signal: the selector reports it when it runs


# ---------------------------------------------------------------- the checks

def _inline_derivation(spec: Any) -> str | None:
    if not isinstance(spec, dict):
        return None
    return next((k for k in LEGACY_SIGNAL_OPTIONS if spec.get(k) not in (None, False)), None)


def check_signals(specs: Sequence[Any], *, engine: str = "local", where: Sequence[str] | None = None) -> list[Any]:
    """Build the signals of ``specs`` and check their extras and local files; returns the built signals.
    ``where[i]`` names spec ``i`` in messages (default ``signal 'NAME'``)."""
    from .signals.compute import build_signal

    problems: list[tuple[str, list[str]] | None] = []
    built = []
    for i, spec in enumerate(specs):
        needs_extra: dict[str, str] = {}
        key = _inline_derivation(spec)
        if key is not None:   # an older inline spelling of a derived model (Cherry's brief_experience)
            needs_extra = dict(derivation_class(LEGACY_SIGNAL_OPTIONS[key]).needs)
            spec = {k: v for k, v in spec.items() if k != key}
        sig = build_signal(spec)
        built.append(sig)
        who = where[i] if where is not None else f"signal {sig.name!r}"
        _check_object(sig, who, problems)
        problems.append(missing_message(who, needs_extra))
    _check_engine(engine, problems)
    _raise(problems)
    return built


def _check_engine(engine: str, problems: list[tuple[str, list[str]] | None]) -> None:
    if engine == "ray":
        problems.append(missing_message("engine 'ray'", {"ray": "the Ray engine"}))


def _check_inputs(inputs: Sequence[Any], problems: list[tuple[str, list[str]] | None]) -> None:
    for inp in inputs:
        path = inp.get("path") if isinstance(inp, Mapping) else getattr(inp, "path", inp)
        if isinstance(path, str) and path.startswith("hf:"):
            problems.append(missing_message(f"input {path!r}", {"datasets": "reading hub datasets"}))


def check_inputs(inputs: Sequence[Any]) -> None:
    """Extras the inputs need (``hf:NAME`` needs datasets), before any is read."""
    problems: list[tuple[str, list[str]] | None] = []
    _check_inputs(inputs, problems)
    _raise(problems)


def _raise(problems: list[tuple[str, list[str]] | None]) -> None:
    found = [p for p in problems if p]
    if found:
        msgs = list(dict.fromkeys(m for m, _ in found))
        raise MissingExtraError("; ".join(msgs), sorted({m for _, ms in found for m in ms}))


def preflight(cfg: Any, selectors: Sequence[Any] | None = None) -> list[Any]:
    """Check a run's needs (a ``RunConfig``) before any reading: the extras of every step, signal, input and
    the engine; the columns the steps read; local model, tokenizer and target paths. Returns the planned
    signals. Raises :class:`MissingExtraError` or ``ConfigError`` (both exit 2)."""
    import dataclasses

    from .plan import make_selector, plan_signals

    if selectors is None:
        selectors = [make_selector(s) for s in cfg.steps]
    preset = getattr(cfg, "preset", None)
    first_step, first_signal = getattr(cfg, "preset_from", (0, 0))
    problems: list[tuple[str, list[str]] | None] = []
    _check_inputs(cfg.inputs, problems)
    _check_engine(cfg.engine, problems)
    from .fs import check_location

    check_location(cfg.cache_dir, "the cache folder")      # remote: reachable, bucket exists (else exit 2)
    out_dir = (cfg.output or {}).get("dir") if isinstance(cfg.output, Mapping) else None
    if isinstance(out_dir, str):
        check_location(out_dir, "the output folder")
    for i, (spec, sel) in enumerate(zip(cfg.steps, selectors)):
        who = f"preset {preset!r}" if preset and i >= first_step else f"{spec.where}.{spec.role}: {spec.selector}"
        emb = _embedding_of(sel)   # the embeddings the step loads: their extras count as the step's
        if emb is not None:
            _check_object(emb, who, [])
        _check_object(sel, who, problems, emb.requirements() if emb is not None else None)
    where = [f"preset {preset!r}" if preset and i >= first_signal else f"signal {_spec_name(s)!r}"
             for i, s in enumerate(cfg.signals)]
    try:
        check_signals(cfg.signals, where=where)
    except MissingExtraError as e:
        problems.append((str(e), e.missing))
    for name, spec in (getattr(cfg, "models", None) or {}).items():   # derived models: their extras
        problems.append(missing_message(f"models.{name}", dict(derivation_class(spec["derive"]).needs)))
        check_local(spec.get("base"), f"models.{name}", "base model")
    _raise(problems)
    # Columns: plan_signals knows every column of the configured and cheap signals without computing any.
    # (A signal with an inline derived model is planned as the plain signal it resolves to.)
    plain = [({k: v for k, v in s.items() if k not in LEGACY_SIGNAL_OPTIONS} if isinstance(s, dict) else s)
             for s in cfg.signals]
    planned = plan_signals(dataclasses.replace(cfg, signals=plain), list(selectors))
    # Signals added for the columns selectors read (tokens for --by tokens_total, ...): their needs too.
    for sig in planned[len(plain):]:
        _check_object(sig, f"signal {sig.name!r}", problems)
    _raise(problems)
    return planned


def _spec_name(spec: Any) -> str:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping):
        return str(spec.get("name"))
    return str(getattr(spec, "name", spec))
