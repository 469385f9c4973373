"""Form fields <-> the API's request types, and errors mapped back to the field they concern."""

from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData

from app.errors import APIError
from app.templates.schemas import TemplateSpec, TemplateVersionRead

# Form field of each part of a template, as the editor names them.
TEMPLATE_FIELDS = (
    "name",
    "model",
    "system_prompt",
    "instruction",
    "examples",
    "selection",
    "variables",
    "temperature",
    "max_tokens",
)


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _number(raw: str) -> str | None:
    return raw.strip() or None  # pydantic parses (and refuses) the text itself


def template_values(form: FormData) -> dict[str, Any]:
    """What the editor showed, to fill it again after an error."""
    inputs = [v for v in form.getlist("example_input") if isinstance(v, str)]
    outputs = [v for v in form.getlist("example_output") if isinstance(v, str)]
    return {
        "name": _text(form, "name"),
        "model": _text(form, "model"),
        "system_prompt": _text(form, "system_prompt"),
        "instruction": _text(form, "instruction"),
        "examples": [
            {"input": i, "output": o}
            for i, o in zip(inputs, outputs, strict=False)
            if i.strip() or o.strip()
        ],
        "rule": _text(form, "rule") or "all",
        "k": _text(form, "k"),
        "variables": _text(form, "variables"),
        "temperature": _text(form, "temperature"),
        "max_tokens": _text(form, "max_tokens"),
        "sample_input": _text(form, "sample_input"),
    }


def _shown(value: Any) -> str:
    return "" if value is None else str(value)


def values_of_version(version: TemplateVersionRead) -> dict[str, Any]:
    variables = "\n".join(
        name if default is None else f"{name}={default}"
        for name, default in version.variables.items()
    )
    return {
        "name": version.name,
        "model": version.model,
        "system_prompt": version.system_prompt,
        "instruction": version.instruction,
        "examples": version.examples,
        "rule": version.example_selection.rule,
        "k": _shown(version.example_selection.k),
        "variables": variables,
        "temperature": _shown(version.params.temperature),
        "max_tokens": _shown(version.params.max_tokens),
        "sample_input": "",
    }


def _variables(text: str) -> dict[str, str | None]:
    """One per line: `name` (required) or `name=default`."""
    out: dict[str, str | None] = {}
    for line in text.splitlines():
        if line.strip():
            name, sep, default = line.partition("=")
            out[name.strip()] = default.strip() if sep else None
    return out


def template_body(values: dict[str, Any]) -> dict[str, Any]:
    """The JSON body the API would get for these form values (without the name)."""
    params = {name: _number(values[name]) for name in ("temperature", "max_tokens")}
    selection: dict[str, Any] = {"rule": values["rule"]}
    if values["rule"] != "all":
        selection["k"] = _number(values["k"])
    return {
        "model": values["model"] or None,
        "system_prompt": values["system_prompt"],
        "instruction": values["instruction"],
        "examples": values["examples"],
        "example_selection": selection,
        "variables": _variables(values["variables"]),
        "params": {k: v for k, v in params.items() if v is not None},
    }


def template_spec(values: dict[str, Any]) -> TemplateSpec:
    return TemplateSpec(**template_body(values))


def _field_of(location: str) -> str:
    """A pydantic location or an APIError param -> the editor's field."""
    head = location.split(".", 1)[0]
    if head == "params":
        return location.split(".")[1] if "." in location else "max_tokens"
    if head == "example_selection":
        return "selection"
    return head if head in TEMPLATE_FIELDS else "form"


def field_errors(exc: Exception) -> dict[str, str]:
    errors: dict[str, str] = {}
    if isinstance(exc, ValidationError):
        for error in exc.errors():
            location = ".".join(str(p) for p in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            errors.setdefault(_field_of(location), message)
    elif isinstance(exc, APIError):
        errors[_field_of(exc.param or "")] = exc.message
    else:
        raise exc
    return errors
