"""A small, safe expression language over signal columns, evaluated vectorised with numpy.

Grammar (a subset of Python expression syntax, parsed with ``ast`` and *interpreted*, never ``eval``'d):

- names: signal or pool columns (``tokens_response``, ``source``, ...); numbers; strings; lists/tuples
- arithmetic ``+ - * / // % **``, unary ``-``; comparisons ``< <= > >= == !=`` (chains allowed);
  membership ``in`` / ``not in`` with a list literal; boolean ``and`` / ``or`` / ``not``
- functions: ``log``, ``log1p``, ``exp``, ``sqrt``, ``abs``, ``isnan``, ``min(a, b)``, ``max(a, b)``,
  ``quantile(column, q)`` (a pool-level constant: the q-quantile of the column over the candidates)

Example: ``tokens_response >= 20 and source not in ["gsm8k_train"] and zlib_ratio > 0.25``.
Comparisons with NaN are false, so ``score > 1`` never keeps a record whose score is missing.
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


class Expression:
    """A parsed expression; ``names`` lists the columns it reads."""

    def __init__(self, text: str):
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("an expression must be a non-empty string")
        self.text = text
        try:
            self.tree = ast.parse(text.strip(), mode="eval").body
        except SyntaxError as e:
            pointer = " " * max((e.offset or 1) - 1, 0) + "^"
            raise ConfigError(f"invalid expression: {e.msg}\n  {text.strip()}\n  {pointer}") from None
        self.names: list[str] = []
        self._check(self.tree)

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.Name):
            if node.id not in _FUNCS and node.id != "quantile" and node.id not in self.names:
                self.names.append(node.id)
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float, str, bool)) or node.value is None:
                raise ConfigError(f"expression {self.text!r}: constant {node.value!r} is not allowed")
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or (node.func.id not in _FUNCS and node.func.id != "quantile"):
                name = ast.unparse(node.func)
                raise ConfigError(f"expression {self.text!r}: unknown function {name!r}; allowed: "
                                  f"{', '.join(sorted(_FUNCS))}, quantile")
            if node.keywords:
                raise ConfigError(f"expression {self.text!r}: keyword arguments are not allowed")
            for a in node.args:
                self._check(a)
        elif isinstance(node, (ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.List, ast.Tuple)):
            if isinstance(node, ast.BinOp) and type(node.op) not in _BINOPS:
                raise ConfigError(f"expression {self.text!r}: operator {type(node.op).__name__} is not allowed")
            if isinstance(node, ast.UnaryOp) and not isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
                raise ConfigError(f"expression {self.text!r}: operator {type(node.op).__name__} is not allowed")
            if isinstance(node, ast.Compare):
                for op in node.ops:
                    if type(op) not in _CMPOPS and not isinstance(op, (ast.In, ast.NotIn)):
                        raise ConfigError(f"expression {self.text!r}: comparison {type(op).__name__} "
                                          f"is not allowed")
            for child in ast.iter_child_nodes(node):
                if not isinstance(child, (ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.expr_context)):
                    self._check(child)
        else:
            raise ConfigError(f"expression {self.text!r}: {type(node).__name__} is not allowed "
                              f"(only columns, numbers, strings, lists, operators and {sorted(_FUNCS)})")

    def evaluate(self, column: Callable[[str], np.ndarray], n: int) -> np.ndarray:
        """Evaluate to a boolean mask of length ``n``; ``column(name)`` returns a numpy array."""
        cache: dict[str, np.ndarray] = {}

        def col(name: str) -> np.ndarray:
            if name not in cache:
                cache[name] = column(name)
            return cache[name]

        with np.errstate(invalid="ignore", divide="ignore"):
            out = self._eval(self.tree, col)
        out = np.asarray(out)
        if out.dtype != bool:
            raise ConfigError(f"expression {self.text!r} must be a condition (true/false), not a value")
        if out.ndim == 0:
            out = np.full(n, bool(out))
        return out

    def _eval(self, node: ast.AST, col: Callable[[str], np.ndarray]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return col(node.id)
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self._eval(e, col) for e in node.elts]
        if isinstance(node, ast.BinOp):
            return _BINOPS[type(node.op)](self._eval(node.left, col), self._eval(node.right, col))
        if isinstance(node, ast.UnaryOp):
            v = self._eval(node.operand, col)
            if isinstance(node.op, ast.Not):
                return ~np.asarray(v, dtype=bool)
            return -v if isinstance(node.op, ast.USub) else v
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
                    if not isinstance(right, list):
                        raise ConfigError(f"expression {self.text!r}: 'in' needs a list, e.g. source in ['a', 'b']")
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
            args = [self._eval(a, col) for a in node.args]
            if name == "quantile":
                if len(args) != 2:
                    raise ConfigError("quantile(column, q) takes two arguments")
                return float(np.nanquantile(np.asarray(args[0], dtype=float), float(args[1])))
            return _FUNCS[name](*args)
        raise ConfigError(f"expression {self.text!r}: cannot evaluate {type(node).__name__}")


def _is_str(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, np.ndarray) and v.dtype == object)


def _check_types(text: str, a: Any, b: Any) -> None:
    if _is_str(a) != _is_str(b) and not (isinstance(a, bool) or isinstance(b, bool)):
        raise ConfigError(f"expression {text!r}: cannot compare text with a number")
