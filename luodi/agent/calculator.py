"""The calculator tool: exact arithmetic by walking the expression's AST (never eval), with limits on
sizes so a model cannot make it hang ("9**9**9")."""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from typing import Any

from luodi.agent.tools import ToolError, tool

_BIN = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS: dict[str, Callable[..., float]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "log": math.log,
    "log10": math.log10,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "floor": math.floor,
    "ceil": math.ceil,
}
_CONSTS = {"pi": math.pi, "e": math.e}


def safe_eval(expression: str) -> float | int:
    """Evaluate arithmetic by walking the AST (no eval): numbers, + - * / // % **, (), math functions."""
    expr = expression.strip().replace("^", "**").replace("×", "*").replace("÷", "/")
    expr = re.sub(r"(?<=\d),(?=\d{3}\b)", "", expr)  # 1,200 -> 1200
    expr = re.sub(r"(\d+(?:\.\d+)?)\s*%\s*of\s*", r"\1/100*", expr)  # 15% of 80
    if len(expr) > 500:
        raise ToolError("expression too long (max 500 characters)")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise ToolError(f"not an arithmetic expression: {expression!r} ({e.msg})") from e

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and (abs(right) > 1000 or abs(left) > 1e6 and abs(right) > 10):
                raise ToolError("exponent too large")
            if (
                isinstance(node.op, ast.Mult | ast.Pow)
                and isinstance(left, int)
                and isinstance(right, int)
                and math.log10(abs(left) + 1) + math.log10(abs(right) + 1) > 400
            ):
                raise ToolError("result too large")
            return _BIN[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](ev(node.operand))
        if isinstance(node, ast.Name) and node.id in _CONSTS:
            return _CONSTS[node.id]
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCS
            and not node.keywords
        ):
            return _FUNCS[node.func.id](*[ev(a) for a in node.args])
        allowed = "numbers, + - * / // % ** ^, parentheses, " + ", ".join([*_FUNCS, *_CONSTS])
        raise ToolError(f"'{ast.unparse(node)}' is not allowed in a calculation; allowed: {allowed}")

    try:
        value = ev(tree)
    except ZeroDivisionError as e:
        raise ToolError("division by zero") from e
    except (OverflowError, ValueError, TypeError) as e:
        raise ToolError(f"cannot compute {expression!r}: {e}") from e
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)
    return value


_ARITH = re.compile(
    r"\d\s*[-+*/^x×÷%]\s*\(?\d|\b(times|plus|minus|divided|multipl\w*|percent|square root|"
    r"power|sum|total|average|compute|calculate)\b",
    re.I,
)


def _arith_relevance(goal: str) -> float:
    return 1.0 if _ARITH.search(goal) else 0.0


@tool(
    relevance=_arith_relevance,
    example={
        "goal": "What is 12 times 7, plus 5?",
        "plan": ["compute 12*7+5", "answer"],
        "arguments": {"expression": "12*7+5"},
        "result": "89",
        "answer": "12 times 7, plus 5, is 89.",
    },
)
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly, e.g. "(17 + 25) * 3" or "sqrt(2) * 10".

    Args:
        expression: the arithmetic expression to compute
    """
    v = safe_eval(expression)
    return f"{v:.10g}" if isinstance(v, float) else str(v)
