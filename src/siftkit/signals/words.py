"""CJK-aware word splitting shared by the cleaning signals (``quality``, ``repetition``) and decontamination.

A *word* is a run of letters, digits or underscores (``\\w+``) outside the CJK ranges, or one CJK character
(Han ideographs, kana, Hangul syllables): Chinese and Japanese are not separated by spaces, so counting
space-separated tokens would make a whole Chinese sentence one "word". Punctuation and symbols are not words.
Every character of a word is kept as written (no lower-casing); callers normalise when they need to.
"""

from __future__ import annotations

import re

# Han (incl. extension A and compatibility ideographs), Hiragana, Katakana, Hangul syllables, CJK punctuation
# is excluded on purpose (it is punctuation).
CJK_CLASS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_WORD = re.compile(f"[{CJK_CLASS}]|[^\\W{CJK_CLASS}]+")
_CJK = re.compile(f"[{CJK_CLASS}]")


# ASCII fast path: every character that is not [A-Za-z0-9_] becomes a space, then str.split (same words as the
# regex on ASCII text, several times faster).
_ASCII_SEP = str.maketrans({c: " " for c in map(chr, range(128)) if not (c.isalnum() or c == "_")})


def split_words(text: str) -> list[str]:
    """The words of ``text`` (see the module docstring): ``"Hi, 你好 world_2"`` -> ``["Hi", "你", "好", "world_2"]``."""
    if text.isascii():
        return text.translate(_ASCII_SEP).split()
    return _WORD.findall(text)


def cjk_fraction(text: str) -> float:
    """Fraction of the non-space characters of ``text`` that are CJK (0.0 for an empty text)."""
    n = len(text) - text.count(" ") - text.count("\n")
    return len(_CJK.findall(text)) / n if n > 0 else 0.0
