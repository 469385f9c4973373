"""Structured-output request fields -> an engine `OutputConstraint`, or a 400 naming the part.

Two spellings are accepted: OpenAI's `response_format` (`text`, `json_object`,
`json_schema` with `name`, `schema`, `strict`) and vLLM's `structured_outputs` extension
(`choice`, `regex`, `json`), so code written for either works unchanged. Only the shape and
OpenAI's strict-mode rules are checked here; whether a schema or regex compiles, and can match
anything, is the engine's check (`InferenceEngine.check_constraint`), also before anything is
queued.
"""

import json
import re
from typing import Any

from app.engine.structured import OutputConstraint
from app.errors import BadRequest

MAX_CHOICES = 256
MAX_CHOICE_CHARS = 256
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

# OpenAI's strict mode: the keywords it supports; anything else in a strict schema is a 400.
# Not derived from the grammar's list (engine/grammar_rules.py SUPPORTED, checked for every
# schema, strict or not): this one is OpenAI's contract, that one what xgrammar keeps. It must
# stay a subset of SUPPORTED, or a schema strict mode accepts would then be refused by the
# grammar check (tests/engine/test_grammar_limits.py checks it).
STRICT_KEYWORDS = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "anyOf",
    "$ref",
    "$defs",
    "definitions",
    "description",
    "title",
    "default",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
}


def invalid(message: str, param: str) -> BadRequest:
    return BadRequest(message, param=param, code="invalid_response_format")


def output_constraint(response_format: Any, structured_outputs: Any) -> OutputConstraint | None:
    """The request's constraint (None: free text). Raises 400 invalid_response_format."""
    from_openai = from_response_format(response_format)
    from_vllm = from_structured_outputs(structured_outputs)
    if from_openai is not None and from_vllm is not None:
        raise invalid("Give response_format or structured_outputs, not both.", "structured_outputs")
    return from_openai or from_vllm


def asks_for_text(response_format: Any) -> bool:
    """An explicit `{"type": "text"}`: no constraint at all, a template's default included."""
    return isinstance(response_format, dict) and response_format.get("type") == "text"


def from_response_format(value: Any) -> OutputConstraint | None:
    param = "response_format"
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid("response_format must be an object with a 'type'.", param)
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return OutputConstraint.json_object(param)
    if kind != "json_schema":
        raise invalid(
            f"response_format.type must be 'text', 'json_object' or 'json_schema'; got {kind!r}.",
            f"{param}.type",
        )
    spec = value.get("json_schema")
    param = f"{param}.json_schema"
    if not isinstance(spec, dict):
        raise invalid("json_schema must be an object with 'name' and 'schema'.", param)
    name = spec.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise invalid(
            "json_schema.name must be 1 to 64 letters, digits, '_' or '-'.", f"{param}.name"
        )
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise invalid("json_schema.schema must be a JSON schema object.", f"{param}.schema")
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise invalid("json_schema.strict must be true or false.", f"{param}.strict")
    if strict:
        check_strict(schema, f"{param}.schema", root=True)
    return OutputConstraint.json_schema(schema, f"{param}.schema")


def from_structured_outputs(
    value: Any, param: str = "structured_outputs"
) -> OutputConstraint | None:
    """vLLM's shape, also a template's stored default (there `param` is "output_constraint")."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid(f"{param} must be an object.", param)
    given = {k: v for k, v in value.items() if v is not None and v is not False}
    known = {"choice", "regex", "json", "json_object"}
    for key in given:
        if key not in known:
            raise invalid(
                f"{param}.{key} is not supported; use choice, regex or json.",
                f"{param}.{key}",
            )
    if len(given) != 1:
        raise invalid(f"{param} needs exactly one of choice, regex, json.", param)
    key, spec = next(iter(given.items()))
    param = f"{param}.{key}"
    if key == "choice":
        return OutputConstraint.choice(check_choices(spec, param), param)
    if key == "regex":
        if not isinstance(spec, str) or not spec:
            raise invalid("regex must be a non-empty string.", param)
        return OutputConstraint.regex(spec, param)
    if key == "json_object":
        return OutputConstraint.json_object(param)
    if isinstance(spec, str):  # vLLM accepts the schema as JSON text too
        try:
            spec = json.loads(spec)
        except ValueError:
            raise invalid("json is not valid JSON.", param) from None
    if not isinstance(spec, dict):
        raise invalid("json must be a JSON schema object.", param)
    return OutputConstraint.json_schema(spec, param)


def check_choices(spec: Any, param: str) -> list[str]:
    if not isinstance(spec, list) or not spec:
        raise invalid("choice must be a non-empty list of strings.", param)
    if len(spec) > MAX_CHOICES:
        raise invalid(f"choice: at most {MAX_CHOICES} choices.", param)
    for i, choice in enumerate(spec):
        if not isinstance(choice, str) or not choice or len(choice) > MAX_CHOICE_CHARS:
            raise invalid(
                f"Each choice must be a non-empty string of at most {MAX_CHOICE_CHARS} characters.",
                f"{param}.{i}",
            )
    if len(set(spec)) != len(spec):
        raise invalid("choice lists a choice twice.", param)
    return list(spec)


def check_strict(schema: Any, param: str, *, root: bool = False) -> None:
    """OpenAI's strict-mode rules: known keywords only, every object closed
    (`additionalProperties: false`) with all its properties required, an object at the root."""
    if not isinstance(schema, dict):
        raise invalid("Every subschema must be a JSON object.", param)
    for key in schema:
        if key not in STRICT_KEYWORDS:
            raise invalid(
                f"'{key}' is not supported with strict: true; remove it or set strict: false.",
                f"{param}.{key}",
            )
    if root and (schema.get("type") != "object" or "anyOf" in schema):
        raise invalid("With strict: true the root schema must be an object.", param)
    types = schema.get("type")
    is_object = types == "object" or (isinstance(types, list) and "object" in types)
    if is_object or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            raise invalid(
                "With strict: true every object needs additionalProperties: false.",
                f"{param}.additionalProperties",
            )
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise invalid("properties must be an object.", f"{param}.properties")
        required = schema.get("required", [])
        missing = [name for name in properties if name not in required]
        if missing:
            raise invalid(
                f"With strict: true every property must be required; missing {missing[0]!r} "
                "(make it nullable instead of optional).",
                f"{param}.required",
            )
        for name, sub in properties.items():
            check_strict(sub, f"{param}.properties.{name}")
    if "items" in schema:
        check_strict(schema["items"], f"{param}.items")
    for group in ("anyOf",):
        if group in schema:
            if not isinstance(schema[group], list) or not schema[group]:
                raise invalid(f"{group} must be a non-empty list.", f"{param}.{group}")
            for i, sub in enumerate(schema[group]):
                check_strict(sub, f"{param}.{group}.{i}")
    for defs in ("$defs", "definitions"):
        if defs in schema:
            if not isinstance(schema[defs], dict):
                raise invalid(f"{defs} must be an object.", f"{param}.{defs}")
            for name, sub in schema[defs].items():
                check_strict(sub, f"{param}.{defs}.{name}")
