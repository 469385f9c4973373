"""The grader templates: `{{ item.<path> }}` and `{{ sample.<field>[.<path>] }}`, substituted
by plain lookups (no Jinja, no expressions, nothing executed).

A path is dot-separated keys (letters, digits, `_`, `-`, `$`, `@`) and `[n]` list indexes:
`sample.output_tools[0].function.name`.
The `sample` namespace has the model's answer: `output_text`, `output_json` (the answer
parsed as JSON, when it is JSON), `output_tools` and `choices`. A value that is not a
string is substituted as compact JSON.
"""

import json
import re
from dataclasses import dataclass
from typing import Any

from app.errors import BadRequest

NAMESPACES = ("item", "sample")
SAMPLE_FIELDS = ("output_text", "output_json", "output_tools", "choices")

_VARIABLE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_STEP = re.compile(r"\.([\w$@-]+)|\[(\d+)\]")
_NAMESPACE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Step = str | int


@dataclass(frozen=True)
class Variable:
    namespace: str
    path: tuple[Step, ...]

    @property
    def text(self) -> str:
        return self.namespace + "".join(
            f"[{s}]" if isinstance(s, int) else f".{s}" for s in self.path
        )


class VariableError(ValueError):
    """A template names something that is not there (at run time: a missing item field, a
    sample that is not JSON)."""

    def __init__(self, message: str, *, sample_parse: bool = False) -> None:
        super().__init__(message)
        self.sample_parse = sample_parse


def parse_variable(expression: str) -> Variable:
    """`item.a.b[0]` -> Variable; ValueError naming what is wrong."""
    text = expression.strip()
    head = _NAMESPACE.match(text)
    if head is None:
        raise ValueError(f"'{{{{{expression}}}}}' does not start with a namespace")
    namespace = head.group(0)
    if namespace not in NAMESPACES:
        raise ValueError(
            f"'{{{{{expression}}}}}' uses the namespace '{namespace}'; the namespaces are "
            "'item' and 'sample'"
        )
    path: list[Step] = []
    at = head.end()
    while at < len(text):
        step = _STEP.match(text, at)
        if step is None:
            raise ValueError(
                f"'{{{{{expression}}}}}' is not a path like item.field or item.list[0]"
            )
        path.append(step.group(1) if step.group(1) is not None else int(step.group(2)))
        at = step.end()
    if namespace == "sample":
        if not path or path[0] not in SAMPLE_FIELDS:
            raise ValueError(
                f"'{{{{{expression}}}}}': the sample namespace has "
                + ", ".join(f"sample.{f}" for f in SAMPLE_FIELDS)
            )
        if path[0] == "output_text" and len(path) > 1:
            raise ValueError(f"'{{{{{expression}}}}}': sample.output_text is a string")
    return Variable(namespace, tuple(path))


def variables(template: str) -> list[Variable]:
    """Every variable in `template`; ValueError for the first that is not one."""
    return [parse_variable(m.group(1)) for m in _VARIABLE.finditer(template)]


def check_template(template: str, param: str) -> None:
    """400 `invalid_template` with `param` for a template with an unknown variable."""
    try:
        variables(template)
    except ValueError as exc:
        raise BadRequest(f"{param}: {exc}.", param=param, code="invalid_template") from None


def _lookup(value: Any, variable: Variable, steps: tuple[Step, ...]) -> Any:
    for step in steps:
        in_list = isinstance(step, int) and isinstance(value, list) and step < len(value)
        in_object = isinstance(step, str) and isinstance(value, dict) and step in value
        if in_list or in_object:
            value = value[step]
        else:
            raise VariableError(f"'{{{{{variable.text}}}}}' is not in the {variable.namespace}")
    return value


def resolve(variable: Variable, context: dict[str, Any]) -> Any:
    """The value a variable names in {"item": ..., "sample": ...}."""
    output_json = variable.namespace == "sample" and variable.path[0] == "output_json"
    if output_json and context["sample"].get("output_json") is None:
        raise VariableError(
            f"'{{{{{variable.text}}}}}': the sample is not valid JSON", sample_parse=True
        )
    return _lookup(context[variable.namespace], variable, variable.path)


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def render(template: str, context: dict[str, Any]) -> str:
    """`template` with each variable replaced by its value; VariableError if one is missing."""
    return _VARIABLE.sub(lambda m: as_text(resolve(parse_variable(m.group(1)), context)), template)
