"""What a structured-output constraint may be before anything compiles it: the size limits and
the JSON-schema keywords the grammar backend (xgrammar) really enforces. Both engines compile
through `structured.Grammars`, which applies these rules first, so both refuse alike.

Which keywords are enforced was measured against xgrammar 0.2.9 (a schema with the keyword
and a value that breaks it: does the grammar still accept that value?). A standard keyword
the grammar would ignore is refused with a 400 naming it, rather than silently not kept.
"""

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.settings import Settings


class ConstraintError(ValueError):
    """The constraint cannot be compiled or cannot match anything; `param` says where in the
    request it came from, `code` what kind of refusal it is."""

    def __init__(
        self, message: str, param: str | None, code: str = "invalid_response_format"
    ) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


@dataclass(frozen=True)
class GrammarLimits:
    # Defaults as in app/settings.py (GRAMMAR_*): see docs/benchmarks.md for what they cost.
    max_bytes: int = 32 * 1024  # the schema as compact JSON, or the regex / choice list
    max_nodes: int = 2048  # JSON values (objects, arrays, scalars) in a schema
    compile_timeout_s: float = 10.0  # a compile still running then is stopped (its process)

    @classmethod
    def from_settings(cls, settings: "Settings") -> "GrammarLimits":
        return cls(
            max_bytes=settings.grammar_max_bytes,
            max_nodes=settings.grammar_max_nodes,
            compile_timeout_s=settings.grammar_compile_timeout_s,
        )


TOO_LARGE = "response_format_too_large"

# Keywords the grammar enforces (each checked with a value that breaks it).
ENFORCED = {
    "type",
    "enum",
    "const",
    "properties",
    "required",
    "additionalProperties",
    "minProperties",
    "maxProperties",
    "patternProperties",
    "propertyNames",
    "unevaluatedItems",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "anyOf",
    # Kept as anyOf: an answer matching two alternatives is not refused (pydantic's tagged
    # unions, whose alternatives never overlap, are the common use).
    "oneOf",
    "allOf",  # one subschema only (pydantic's wrapped $ref); more are refused below
    "$ref",
    "$defs",
    "definitions",
    "nullable",
}
# Say nothing about the answer: accepted and left out of the grammar.
ANNOTATIONS = {
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
    "$anchor",
    "deprecated",
    "readOnly",
    "writeOnly",
    "discriminator",  # OpenAPI's tag for a oneOf; the alternatives' own consts enforce it
}
# Every schema's keywords are checked against this. With `strict: true` a schema is first held
# to OpenAI's narrower list (protocol/structured.py STRICT_KEYWORDS), which must stay a subset
# of this one (tests/engine/test_grammar_limits.py checks it).
SUPPORTED = ENFORCED | ANNOTATIONS
# xgrammar's formats; any other value would be ignored.
FORMATS = {
    "email",
    "date",
    "time",
    "date-time",
    "duration",
    "uuid",
    "ipv4",
    "ipv6",
    "hostname",
    "uri",
    "uri-reference",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
}
# Keywords the grammar keeps only when the same schema names its type (alone they are ignored).
NEEDS_TYPE = {
    "minLength": "string",
    "maxLength": "string",
    "pattern": "string",
    "format": "string",
    "minimum": "number",
    "maximum": "number",
    "exclusiveMinimum": "number",
    "exclusiveMaximum": "number",
    "multipleOf": "number",
    "minItems": "array",
    "maxItems": "array",
}
# Values of these keywords are subschemas keyed by a name / listed / single.
NAMED_SUBSCHEMAS = {"properties", "patternProperties", "$defs", "definitions"}
LISTED_SUBSCHEMAS = {"anyOf", "oneOf", "allOf", "prefixItems"}
SINGLE_SUBSCHEMAS = {"items", "additionalProperties", "propertyNames", "unevaluatedItems"}


def check_size(kind: str, spec: str, param: str | None, limits: GrammarLimits) -> None:
    """The constraint's text (compact JSON for a schema) against GRAMMAR_MAX_BYTES."""
    size = len(spec.encode())
    if size > limits.max_bytes:
        what = {"json": "schema", "regex": "regex", "choice": "choice list"}.get(kind, kind)
        raise ConstraintError(
            f"The {what} is {size} bytes; this server compiles at most {limits.max_bytes} "
            "(GRAMMAR_MAX_BYTES).",
            param,
            TOO_LARGE,
        )


def check_schema(schema: Any, param: str | None, limits: GrammarLimits) -> None:
    """Node count and keywords of a JSON schema; raises ConstraintError naming the place."""
    root = param or "response_format"
    nodes = count_nodes(schema, limits.max_nodes)
    if nodes > limits.max_nodes:
        raise ConstraintError(
            f"The schema has more than {limits.max_nodes} JSON values (objects, arrays, "
            "strings, numbers); this server compiles at most that many (GRAMMAR_MAX_NODES).",
            root,
            TOO_LARGE,
        )
    _check_keywords(schema, root)


def count_nodes(value: Any, stop_after: int) -> int:
    """JSON values in `value`, counting stops a little past `stop_after`."""
    count = 0
    stack = [value]
    while stack and count <= stop_after:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def _check_keywords(schema: Any, path: str) -> None:
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise ConstraintError("Every subschema must be a JSON object.", path)
    for key in schema:
        if key not in SUPPORTED:
            raise ConstraintError(
                f"The schema keyword '{key}' is not supported: the grammar would not keep to "
                "it. Remove it, or express it with the supported keywords (see the docs).",
                f"{path}.{key}",
            )
        group = NEEDS_TYPE.get(key)
        if group is not None and "type" not in schema:
            raise ConstraintError(
                f"'{key}' is only kept with a 'type' in the same schema (e.g. \"{group}\").",
                f"{path}.{key}",
            )
    fmt = schema.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise ConstraintError(
            f"The format {json.dumps(fmt)} is not supported; supported formats: "
            f"{', '.join(sorted(FORMATS))}.",
            f"{path}.format",
        )
    if isinstance(schema.get("allOf"), list) and len(schema["allOf"]) > 1:
        raise ConstraintError(
            "allOf with more than one schema is not supported: merge them into one.",
            f"{path}.allOf",
        )
    for key in NAMED_SUBSCHEMAS & schema.keys():
        if isinstance(schema[key], dict):
            for name, sub in schema[key].items():
                _check_keywords(sub, f"{path}.{key}.{name}")
    for key in LISTED_SUBSCHEMAS & schema.keys():
        if isinstance(schema[key], list):
            for i, sub in enumerate(schema[key]):
                _check_keywords(sub, f"{path}.{key}.{i}")
    for key in SINGLE_SUBSCHEMAS & schema.keys():
        if isinstance(schema[key], dict):
            _check_keywords(schema[key], f"{path}.{key}")
