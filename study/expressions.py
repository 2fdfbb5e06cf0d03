"""Derived pipeline values: small arithmetic expressions over named values (``n: k + excess``)."""

from __future__ import annotations

import ast
import operator
from typing import Any

from study.errors import PipelineError

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_FUNCS = {"min": min, "max": max, "round": round, "int": int}


def evaluate(expr: str, names: dict[str, Any]) -> Any:
    """Evaluate a small arithmetic expression over named values (no attribute access, no calls but
    min/max/round/int)."""

    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise PipelineError(f"unknown name {node.id!r} in expression {expr!r}")
            return names[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            op: Any = _BINOPS[type(node.op)]
            return op(walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCS
            and not node.keywords
        ):
            func: Any = _FUNCS[node.func.id]
            return func(*[walk(a) for a in node.args])
        raise PipelineError(f"unsupported syntax in expression {expr!r}")

    try:
        tree = ast.parse(str(expr), mode="eval")
    except SyntaxError:
        raise PipelineError(f"cannot parse expression {expr!r}") from None
    return walk(tree)
