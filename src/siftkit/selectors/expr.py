"""A small, safe expression language over signal columns, evaluated vectorised with numpy.

Grammar (a subset of Python expression syntax, parsed with ``ast`` and *interpreted*, never ``eval``'d):

- names: signal or pool columns (``tokens_response``, ``source``, ...); numbers; strings; lists/tuples
- arithmetic ``+ - * / // % **``, unary ``-``; comparisons ``< <= > >= == !=`` (chains allowed);
  membership ``in`` / ``not in`` with a list literal; boolean ``and`` / ``or`` / ``not``
- functions: ``log``, ``log1p``, ``exp``, ``sqrt``, ``abs``, ``isnan``, ``min(a, b)``, ``max(a, b)``,
  ``quantile(column, q)`` (a pool-level constant: the q-quantile of the column over the candidates)

Example: ``tokens_response >= 20 and source not in ["gsm8k_train"] and zlib_ratio > 0.25``.
Comparisons with NaN are false, so ``score > 1`` never keeps a record whose score is missing.

Bounded by construction: numbers are float64 (``10**10**10`` is folded when parsed and rejected as an
overflow, never computed with Python's unbounded integers); arithmetic takes numbers only (no list or text
repetition); functions check their arity and arguments; constants are limited in size. Parsing checks the
shape and kinds; ``check_columns`` checks kinds against the real column types and evaluates the expression on
one synthetic row, so a mistake fails (exit 2) before any signal is computed.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ConfigError

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_CMPOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.Eq: operator.eq, ast.NotEq: operator.ne,
}
_FUNCS: dict[str, Callable[..., Any]] = {
    "log": np.log, "log1p": np.log1p, "exp": np.exp, "sqrt": np.sqrt, "abs": np.abs, "isnan": np.isnan,
    "min": np.minimum, "max": np.maximum,
}


MAX_STRING = 10_000          # characters in one string constant
MAX_LIST = 100_000          # elements in one list literal
MAX_NODES = 2_000           # nodes in one expression
_UNARY = {"log", "log1p", "exp", "sqrt", "abs", "isnan"}
_BINARY = {"min", "max", "quantile"}
_POOL_KINDS = {"id": "str", "source": "str", "file": "str", "row": "num", "line": "num"}

# Kinds of sub-expressions: "num", "str", "bool", "list", or "col" (a column whose type is not known yet).


def kind_of_type(t: Any) -> str:
    """The expression kind of an Arrow type: text, boolean or number."""
    import pyarrow as pa

    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "str"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "num"
    return "other"


class Expression:
    """A parsed expression; ``names`` lists the columns it reads."""

    def __init__(self, text: str):
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("an expression must be a non-empty string")
        self.text = text
        try:
            self.tree = ast.parse(text.strip(), mode="eval").body
        except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
            if isinstance(e, SyntaxError):
                pointer = " " * max((e.offset or 1) - 1, 0) + "^"
                raise ConfigError(f"invalid expression: {e.msg}\n  {text.strip()}\n  {pointer}") from None
            raise ConfigError(f"invalid expression {text.strip()[:200]!r}: {type(e).__name__}") from None
        n_nodes = sum(1 for _ in ast.walk(self.tree))
        if n_nodes > MAX_NODES:
            raise ConfigError(f"expression too large ({n_nodes:,} parts; at most {MAX_NODES:,})")
        self.names: list[str] = []
        self._folded: dict[int, Any] = {}
        kind = self._infer(self.tree, lambda name: "col")
        if kind not in ("bool", "col"):
            raise ConfigError(f"expression {self.text!r} must be a condition (true/false), not a {_WORD[kind]}")

    # ------------------------------------------------------------ checking

    def _err(self, msg: str) -> ConfigError:
        return ConfigError(f"expression {self.text!r}: {msg}")

    def _infer(self, node: ast.AST, coltype: Callable[[str], str]) -> str:
        """The kind of ``node``; raises ConfigError on anything outside the language."""
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool):
                return "bool"
            if isinstance(v, (int, float)):
                self._fold_number(node)
                return "num"
            if isinstance(v, str):
                if len(v) > MAX_STRING:
                    raise self._err(f"a string constant of {len(v):,} characters (at most {MAX_STRING:,})")
                return "str"
            raise self._err(f"constant {v!r} is not allowed")
        if isinstance(node, ast.Name):
            if node.id in _FUNCS or node.id == "quantile":
                raise self._err(f"{node.id} is a function: call it, e.g. {node.id}(x)")
            if node.id not in self.names:
                self.names.append(node.id)
            return coltype(node.id)
        if isinstance(node, (ast.List, ast.Tuple)):
            if len(node.elts) > MAX_LIST:
                raise self._err(f"a list of {len(node.elts):,} items (at most {MAX_LIST:,})")
            kinds = set()
            for e in node.elts:
                if self._fold(e) is None and not (isinstance(e, ast.Constant) and isinstance(e.value, str)):
                    raise self._err("list items must be constants (numbers or strings)")
                kinds.add(self._infer(e, coltype))
            if len(kinds - {"bool"}) > 1:
                raise self._err("a list mixes text and numbers")
            return "list"
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                raise self._err(f"operator {type(node.op).__name__} is not allowed")
            for side in (node.left, node.right):
                k = self._infer(side, coltype)
                if k not in ("num", "col", "bool"):
                    raise self._err(f"arithmetic needs numbers, not a {_WORD[k]} ({ast.unparse(side)[:60]})")
            self._fold(node)
            return "num"
        if isinstance(node, ast.UnaryOp):
            k = self._infer(node.operand, coltype)
            if isinstance(node.op, ast.Not):
                if k not in ("bool", "col"):
                    raise self._err(f"'not' needs a condition, not a {_WORD[k]}")
                return "bool"
            if not isinstance(node.op, (ast.USub, ast.UAdd)):
                raise self._err(f"operator {type(node.op).__name__} is not allowed")
            if k not in ("num", "col"):
                raise self._err(f"a sign needs a number, not a {_WORD[k]}")
            self._fold(node)
            return "num"
        if isinstance(node, ast.BoolOp):
            for v in node.values:
                k = self._infer(v, coltype)
                if k not in ("bool", "col"):
                    raise self._err(f"'and'/'or' need conditions, not a {_WORD[k]} ({ast.unparse(v)[:60]})")
            return "bool"
        if isinstance(node, ast.Compare):
            left = self._infer(node.left, coltype)
            for op, right_node in zip(node.ops, node.comparators):
                if isinstance(op, (ast.In, ast.NotIn)):
                    if not isinstance(right_node, (ast.List, ast.Tuple)):
                        raise self._err("'in' needs a list, e.g. source in ['a', 'b']")
                    self._infer(right_node, coltype)
                    if left == "list":
                        raise self._err("the left side of 'in' must be a column or a value")
                    items = {("str" if isinstance(e, ast.Constant) and isinstance(e.value, str) else "num")
                             for e in right_node.elts}
                    if left in ("num", "str") and items and items != {left}:
                        raise self._err("'in' compares text with numbers")
                    right = "list"
                elif type(op) in _CMPOPS:
                    right = self._infer(right_node, coltype)
                    if "list" in (left, right):
                        raise self._err("a list can only follow 'in'")
                    known = {left, right} - {"col"}
                    if "str" in known and len(known) > 1:
                        raise self._err("cannot compare text with a number")
                else:
                    raise self._err(f"comparison {type(op).__name__} is not allowed")
                left = right
            return "bool"
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or (node.func.id not in _FUNCS and node.func.id != "quantile"):
                raise self._err(f"unknown function {ast.unparse(node.func)!r}; allowed: "
                                f"{', '.join(sorted(_FUNCS))}, quantile")
            if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
                raise self._err("keyword and starred arguments are not allowed")
            name = node.func.id
            want = 1 if name in _UNARY else 2
            if len(node.args) != want:
                usage = {"quantile": "quantile(column, q)", "min": "min(a, b)", "max": "max(a, b)"}.get(
                    name, f"{name}(x)")
                raise self._err(f"{name} takes {want} argument{'s' if want > 1 else ''}: {usage}")
            for a in node.args:
                k = self._infer(a, coltype)
                if k not in ("num", "col", "bool"):
                    raise self._err(f"{name}() needs numbers, not a {_WORD[k]} ({ast.unparse(a)[:60]})")
            if name == "quantile":
                q = self._fold(node.args[1])
                if q is None or not 0.0 <= q <= 1.0:
                    raise self._err("quantile(column, q) needs a constant q between 0 and 1")
                if self._fold(node.args[0]) is not None:
                    raise self._err("quantile(column, q) needs a column, not a constant")
            return "bool" if name == "isnan" else "num"
        raise self._err(f"{type(node).__name__} is not allowed "
                        f"(only columns, numbers, strings, lists, operators and {sorted(_FUNCS)}, quantile)")

    def _fold_number(self, node: ast.Constant) -> np.float64:
        try:
            v = np.float64(float(node.value))
        except OverflowError:
            v = np.float64(np.inf)
        if not np.isfinite(v):
            raise self._err(f"the number {str(node.value)[:40]}... is too large (the limit is about 1.8e308)")
        self._folded[id(node)] = v
        return v

    def _fold(self, node: ast.AST) -> np.float64 | None:
        """The value of a constant numeric sub-expression (float64), or None when it reads a column."""
        key = id(node)
        if key in self._folded:
            return self._folded[key]
        v: Any = None
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(
                node.value, bool):
            return self._fold_number(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            a = self._fold(node.operand)
            if a is not None:
                v = -a if isinstance(node.op, ast.USub) else a
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            a, b = self._fold(node.left), self._fold(node.right)
            if a is not None and b is not None:
                with np.errstate(all="ignore"):
                    v = np.float64(_BINOPS[type(node.op)](a, b))
                if not np.isfinite(v) and np.isfinite(a) and np.isfinite(b) and not (
                        isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and b == 0):
                    raise self._err(f"{ast.unparse(node)[:60]} overflows (the result is beyond about 1.8e308)")
        if v is not None:
            self._folded[key] = v
        return v

    def check_columns(self, kinds: dict[str, str]) -> None:
        """Check the expression against column kinds (``"num"``, ``"str"``, ``"bool"``; pool columns are
        known) and evaluate it on one synthetic row, so errors surface before any heavy work."""
        all_kinds = {**_POOL_KINDS, **kinds}
        for name in self.names:
            if all_kinds.get(name, "col") == "other":
                raise self._err(f"column {name!r} holds lists or vectors, which expressions cannot read")
        self._infer(self.tree, lambda name: all_kinds.get(name, "col"))
        samples = {"num": np.array([1.0]), "str": np.array(["a"], dtype=object), "bool": np.array([True]),
                   "col": np.array([1.0])}
        self.evaluate(lambda name: samples[all_kinds.get(name, "col")], 1)

    # ------------------------------------------------------------ evaluation

    def evaluate(self, column: Callable[[str], np.ndarray], n: int) -> np.ndarray:
        """Evaluate to a boolean mask of length ``n``; ``column(name)`` returns a numpy array."""
        cache: dict[str, np.ndarray] = {}

        def col(name: str) -> np.ndarray:
            if name not in cache:
                cache[name] = column(name)
            return cache[name]

        try:
            with np.errstate(all="ignore"):
                out = self._eval(self.tree, col)
        except ConfigError:
            raise
        except (TypeError, ValueError, OverflowError, ZeroDivisionError, MemoryError) as e:
            raise self._err(f"cannot be evaluated: {e}") from None
        out = np.asarray(out)
        if out.dtype != bool:
            raise ConfigError(f"expression {self.text!r} must be a condition (true/false), not a value")
        if out.ndim == 0:
            out = np.full(n, bool(out))
        return out

    def _eval(self, node: ast.AST, col: Callable[[str], np.ndarray]) -> Any:
        folded = self._folded.get(id(node))
        if folded is not None:
            return folded
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return col(node.id)
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self._eval(e, col) for e in node.elts]
        if isinstance(node, ast.BinOp):
            left, right = _numeric(self._eval(node.left, col)), _numeric(self._eval(node.right, col))
            return _BINOPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp):
            v = self._eval(node.operand, col)
            if isinstance(node.op, ast.Not):
                return ~np.asarray(v, dtype=bool)
            return -_numeric(v) if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BoolOp):
            vals = [np.asarray(self._eval(v, col), dtype=bool) for v in node.values]
            f = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            out = vals[0]
            for v in vals[1:]:
                out = f(out, v)
            return out
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, col)
            result: Any = True
            for op, right_node in zip(node.ops, node.comparators):
                right = self._eval(right_node, col)
                if isinstance(op, (ast.In, ast.NotIn)):
                    r = np.isin(np.asarray(left, dtype=object if _is_str(left) else None), right)
                    r = ~r if isinstance(op, ast.NotIn) else r
                else:
                    _check_types(self.text, left, right)
                    r = _CMPOPS[type(op)](left, right)
                result = np.logical_and(result, r)
                left = right
            return result
        if isinstance(node, ast.Call):
            name = node.func.id  # type: ignore[attr-defined]
            args = [_numeric(self._eval(a, col)) for a in node.args]
            if name == "quantile":
                v = np.asarray(args[0], dtype=float)
                v = v[~np.isnan(v)] if v.ndim else v
                return float(np.quantile(v, float(args[1]))) if np.size(v) else float("nan")
            return _FUNCS[name](*args)
        raise self._err(f"cannot evaluate {type(node).__name__}")


_WORD = {"num": "number", "str": "text", "bool": "condition", "list": "list", "col": "column", "other": "list"}


def _numeric(v: Any) -> Any:
    """Arithmetic runs on float64 (bounded, no Python big integers); text is refused."""
    if _is_str(v):
        raise ConfigError("arithmetic on text is not allowed")
    if isinstance(v, np.ndarray) and v.dtype.kind in "iub":
        return v.astype(np.float64)
    if isinstance(v, (bool, int)):
        return np.float64(v)
    return v


def _is_str(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, np.ndarray) and v.dtype == object)


def _check_types(text: str, a: Any, b: Any) -> None:
    if _is_str(a) != _is_str(b) and not (isinstance(a, bool) or isinstance(b, bool)):
        raise ConfigError(f"expression {text!r}: cannot compare text with a number")
