"""multi: `calculate_output`, a formula over the sub-graders' scores, checked with `ast` when
the grader is validated and evaluated by simpleeval (never `eval`).

OpenAI's formula language: + - * / and ^ (power), numbers, the sub-graders' names, and
min, max, abs, floor, ceil, exp, sqrt, log.
"""

import ast
import math
import operator

from simpleeval import SimpleEval

from app.errors import BadRequest

FUNCTIONS = {
    "min": min,
    "max": max,
    "abs": abs,
    "floor": math.floor,
    "ceil": math.ceil,
    "exp": math.exp,
    "sqrt": math.sqrt,
    "log": math.log,
}


def _in_floats(op):
    return lambda *args: op(*(float(a) for a in args))


# Floats only: integer arithmetic on big literals (9 ^ 999999 ^ 9, a chain of 4000-digit
# products) would hold the event loop for minutes; in floats it overflows at once, which is
# a formula error.
OPERATORS = {
    ast.Add: _in_floats(operator.add),
    ast.Sub: _in_floats(operator.sub),
    ast.Mult: _in_floats(operator.mul),
    ast.Div: _in_floats(operator.truediv),
    ast.Pow: _in_floats(math.pow),
    ast.USub: _in_floats(operator.neg),
    ast.UAdd: _in_floats(operator.pos),
}
_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Call, ast.Name, ast.Constant, ast.Load)
_NODES += tuple(OPERATORS)


class FormulaError(ValueError):
    pass


def _python(formula: str) -> str:
    # ^ is power here; in Python it is xor, with the wrong precedence too.
    return formula.replace("^", "**")


def parse_formula(formula: str, names: set[str]) -> ast.Expression:
    """The formula's tree; FormulaError naming what is not allowed."""
    try:
        tree = ast.parse(_python(formula).strip(), mode="eval")
    except SyntaxError as exc:
        raise FormulaError(f"the formula does not parse ({exc.msg})") from None
    except (ValueError, RecursionError, MemoryError) as exc:  # a 5000-digit literal, nesting
        raise FormulaError(f"the formula does not parse ({type(exc).__name__})") from None
    for node in ast.walk(tree):
        if not isinstance(node, _NODES):
            raise FormulaError(f"'{ast.unparse(node)}' is not allowed in a formula")
        if isinstance(node, ast.Constant) and (
            isinstance(node.value, bool) or not isinstance(node.value, int | float)
        ):
            raise FormulaError(f"{node.value!r} is not a number")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                raise FormulaError(
                    f"'{ast.unparse(node.func)}' is not a function here; the functions are "
                    + ", ".join(FUNCTIONS)
                )
            if node.keywords or not node.args:
                raise FormulaError(f"'{ast.unparse(node)}': functions take plain arguments")
        elif isinstance(node, ast.Name) and node.id not in names and node.id not in FUNCTIONS:
            raise FormulaError(
                f"'{node.id}' is not one of the graders ({', '.join(sorted(names))})"
            )
    return tree


def check_formula(formula: str, names: set[str], param: str) -> None:
    try:
        parse_formula(formula, names)
    except FormulaError as exc:
        raise BadRequest(f"{param}: {exc}.", param=param, code="invalid_formula") from None


def evaluate(formula: str, scores: dict[str, float]) -> float:
    """The formula's value; FormulaError if it cannot be computed (a division by zero)."""
    parse_formula(formula, set(scores))
    evaluator = SimpleEval(operators=OPERATORS, functions=FUNCTIONS, names=dict(scores))
    try:
        value = evaluator.eval(_python(formula).strip())
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise FormulaError(f"the formula could not be computed: {exc}") from None
    except Exception as exc:  # simpleeval's own limits (a power too large)
        raise FormulaError(f"the formula could not be computed: {exc}") from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise FormulaError(f"the formula gave {value!r}, not a finite number")
    return float(value)
