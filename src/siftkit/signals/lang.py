"""``lang``: language identification per record and, optionally, per turn (the ``clean`` extra).

Columns: ``lang`` (ISO 639-1 code of the segment's text, ``""`` for a text without letters) and
``lang_conf`` (the identifier's probability for that language, 0..1; NaN for an empty text). With
``per_turn=True`` also ``lang_turns`` (the code of every turn, comma-joined, ``""`` for an empty turn) and
``lang_mixed`` (1 when two turns of at least ``min_chars`` characters are identified, each with confidence of
at least ``min_conf``, as different languages: e.g. a Chinese question answered in English).

Backends, both with their model inside the wheel (no download at run time):
- ``py3langid`` (default): a naive Bayes byte n-gram model over 97 languages (langid.py, modernised); a
  few MB, no pickle (the model is an ``.npz``). Measured faster and as accurate on the pool's zh/en
  sources (docs/cleaning.md).
- ``lingua``: ``lingua-language-detector`` (Rust; 75 languages; n-gram models of up to 5 characters),
  built with ``languages`` (default: all) and low-accuracy mode unless ``high_accuracy=True``.

Only the first ``max_chars`` characters of a text are read (default 1000): enough for a stable answer.
Chinese varieties that py3langid names separately (``wuu``, ``yue``, ...) are reported as ``zh`` unless
``chinese_varieties=True``: on the pool's Mandarin sources they are confusions, not dialect text.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ConfigError, MissingDependencyError
from ..registry import register_signal
from .base import Signal
from .segments import flatten

BACKENDS = {"py3langid": "py3langid", "lingua": "lingua"}
# Chinese varieties py3langid names separately (Wu, Yue, ...): reported as "zh" unless chinese_varieties=True,
# since on Mandarin text they are mostly confusions (docs/cleaning.md).
ZH_VARIETIES = frozenset({"wuu", "yue", "cmn", "lzh", "gan", "hak", "nan", "hsn", "cjy", "zh-yue"})


class _Py3Langid:
    def __init__(self) -> None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self.ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)

    def __call__(self, texts: list[str]) -> list[tuple[str, float]]:
        out = []
        for t in texts:
            code, p = self.ident.classify(t)
            out.append((str(code), float(p)))
        return out


class _Lingua:
    def __init__(self, languages: list[str] | None, high_accuracy: bool) -> None:
        from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

        if languages:
            try:
                langs = [Language.from_iso_code_639_1(getattr(IsoCode639_1, c.upper())) for c in languages]
            except AttributeError as e:
                raise ConfigError(f"lang: unknown ISO 639-1 code in languages {languages!r} ({e})") from None
            b = LanguageDetectorBuilder.from_languages(*langs)
        else:
            b = LanguageDetectorBuilder.from_all_languages()
        if not high_accuracy:
            b = b.with_low_accuracy_mode()
        self.det = b.build()

    def __call__(self, texts: list[str]) -> list[tuple[str, float]]:
        out = []
        for vals in self.det.compute_language_confidence_values_in_parallel(texts):
            if not vals:
                out.append(("", math.nan))
            else:
                top = vals[0]
                out.append((top.language.iso_code_639_1.name.lower(), float(top.value)))
        return out


@register_signal("lang")
class Lang(Signal):
    """Language code and confidence of a segment (default the conversation); see the module docstring."""

    version = "1"
    batch_size = 8192
    requires_for = "language identification"

    def __init__(self, backend: str = "py3langid", segment: str = "conversation", per_turn: bool = False,
                 max_chars: int = 1000, min_chars: int = 20, min_conf: float = 0.9,
                 languages: list[str] | None = None, high_accuracy: bool = False,
                 chinese_varieties: bool = False):
        if backend not in BACKENDS:
            raise ConfigError(f"lang: backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        if segment not in ("conversation", "query", "response"):
            raise ConfigError(f"lang: segment must be conversation, query or response, not {segment!r}")
        if int(max_chars) < 1:
            raise ConfigError("lang: max_chars must be positive")
        self.backend, self.segment, self.per_turn = backend, segment, bool(per_turn)
        self.max_chars, self.min_chars, self.min_conf = int(max_chars), int(min_chars), float(min_conf)
        self.languages = list(languages) if languages else None
        self.high_accuracy = bool(high_accuracy)
        self.chinese_varieties = bool(chinese_varieties)
        self._model: Any = None

    def requirements(self) -> dict[str, str]:
        return {BACKENDS[self.backend]: self.requires_for}

    def config(self) -> dict[str, Any]:
        c: dict[str, Any] = {"backend": self.backend, "segment": self.segment, "per_turn": self.per_turn,
                             "max_chars": self.max_chars, "chinese_varieties": self.chinese_varieties}
        if self.per_turn:
            c |= {"min_chars": self.min_chars, "min_conf": self.min_conf}
        if self.backend == "lingua":
            c |= {"languages": self.languages, "high_accuracy": self.high_accuracy}
        return c

    def columns(self) -> dict[str, pa.DataType]:
        cols = {"lang": pa.string(), "lang_conf": pa.float64()}
        if self.per_turn:
            cols |= {"lang_turns": pa.string(), "lang_mixed": pa.int8()}
        return cols

    def setup(self) -> None:
        if self._model is not None:
            return
        try:   # preflight names the missing extra before any work; this is the same error in a worker
            import importlib

            importlib.import_module("py3langid" if self.backend == "py3langid" else "lingua")
            self._model = (_Py3Langid() if self.backend == "py3langid"
                           else _Lingua(self.languages, self.high_accuracy))
        except ImportError:
            package = "py3langid" if self.backend == "py3langid" else "lingua-language-detector"
            raise MissingDependencyError(package, "clean", f"signal lang (backend {self.backend})") from None

    def identify(self, texts: list[str]) -> list[tuple[str, float]]:
        """(code, confidence) per text; ``("", nan)`` for texts without a letter."""
        self.setup()
        cut = [t[: self.max_chars] for t in texts]
        has = [any(c.isalpha() for c in t) for t in cut]
        res = self._model([t for t, h in zip(cut, has) if h]) if any(has) else []
        if not self.chinese_varieties:
            res = [("zh", p) if c in ZH_VARIETIES else (c, p) for c, p in res]
        it = iter(res)
        return [next(it) if h else ("", math.nan) for h in has]

    def compute(self, batch: pa.Table) -> dict[str, np.ndarray]:
        fb = flatten(batch)
        res = self.identify(fb.texts(self.segment))
        out: dict[str, np.ndarray] = {
            "lang": np.asarray([r[0] for r in res], dtype=object),
            "lang_conf": np.asarray([r[1] for r in res], dtype=np.float64),
        }
        if self.per_turn:
            turns = self.identify(fb.contents)
            contents, off = fb.contents, fb.offsets.tolist()
            codes, mixed = [], np.zeros(fb.n, dtype=np.int8)
            for i in range(fb.n):
                s, e = off[i], off[i + 1]
                codes.append(",".join(turns[j][0] for j in range(s, e)))
                sure = {turns[j][0] for j in range(s, e)
                        if len(contents[j]) >= self.min_chars and turns[j][0] and turns[j][1] >= self.min_conf}
                mixed[i] = len(sure) > 1
            out["lang_turns"] = np.asarray(codes, dtype=object)
            out["lang_mixed"] = mixed
        return out
