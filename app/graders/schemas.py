"""The grader request shapes (OpenAI's JSON), parsed by `parse_grader` so that every refusal
is a 400 whose `param` points into the request: `grader.graders.a.range`.

The checks that need nothing but the grader itself live here: its shape, its templates, a
score range, labels, a python source with a `grade` function. What needs the host (a metric's
library, the sandbox, a judge model) is checked by service.validate_grader.
"""

import ast
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from app.errors import BadRequest, validation_message
from app.graders.templating import check_template
from app.protocol.values import RequestModel

Metric = Literal[
    "fuzzy_match", "bleu", "gleu", "meteor", "cosine",
    "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l",
]  # fmt: skip

MAX_SOURCE_BYTES = 256 * 1024  # OpenAI's limit on a python grader's source


class _Named(RequestModel):
    """`name` may be left out (OpenAI's own python example does): it is then the type."""

    name: str = ""

    @model_validator(mode="after")
    def _default_name(self) -> "_Named":
        if not self.name:
            self.name = getattr(self, "type", "")
        return self


class StringCheckGrader(_Named):
    type: Literal["string_check"]
    input: str
    reference: str
    operation: Literal["eq", "ne", "like", "ilike"]


class TextSimilarityGrader(_Named):
    type: Literal["text_similarity"]
    input: str
    reference: str
    evaluation_metric: Metric
    pass_threshold: float | None = None  # used by evals


TEXT_PARTS = ("input_text", "output_text")


class TextPart(BaseModel):
    type: Literal["input_text", "output_text"]
    text: str


class Message(BaseModel):
    role: Literal["user", "assistant", "system", "developer"]
    # Text only: images and audio are not something adaptd's models read.
    content: str | TextPart | list[TextPart]
    type: Literal["message"] | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        parts = value if isinstance(value, list) else [value]
        for part in parts:
            if isinstance(part, dict) and part.get("type") not in TEXT_PARTS:
                raise ValueError(
                    f"only text content ({', '.join(TEXT_PARTS)}) is supported; "
                    f"got {part.get('type')!r}"
                )
        return value

    def templates(self) -> list[tuple[str, str]]:
        """(template text, its param suffix) for each text in the content."""
        if isinstance(self.content, str):
            return [(self.content, "content")]
        if isinstance(self.content, TextPart):
            return [(self.content.text, "content.text")]
        return [(part.text, f"content.{i}.text") for i, part in enumerate(self.content)]


class SamplingParams(BaseModel):
    max_completions_tokens: int | None = Field(default=None, ge=1)
    reasoning_effort: str | None = None  # accepted; adaptd's models do not reason
    seed: int | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)


class _ModelGrader(_Named):
    model: str = Field(min_length=1)
    input: list[Message] = Field(min_length=1)
    sampling_params: SamplingParams | None = None


class ScoreModelGrader(_ModelGrader):
    type: Literal["score_model"]
    range: Annotated[list[float], Field(min_length=2, max_length=2)] = [0.0, 1.0]
    pass_threshold: float | None = None

    @field_validator("range", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any) -> Any:
        return [0.0, 1.0] if value is None else value

    @field_validator("range")
    @classmethod
    def _range_ordered(cls, value: list[float]) -> list[float]:
        if not value[0] < value[1]:
            raise ValueError(f"range must be [low, high] with low < high; got {value}")
        return value


class LabelModelGrader(_ModelGrader):
    type: Literal["label_model"]
    labels: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    passing_labels: list[str] = Field(min_length=1)


class PythonGrader(_Named):
    type: Literal["python"]
    source: str = Field(min_length=1)
    image_tag: str | None = None  # accepted; there is one runtime
    pass_threshold: float | None = None


SingleGrader = (
    StringCheckGrader | TextSimilarityGrader | ScoreModelGrader | LabelModelGrader | PythonGrader
)


class MultiGrader(_Named):
    type: Literal["multi"]
    graders: dict[str, SingleGrader]
    calculate_output: str = Field(min_length=1)


Grader = SingleGrader | MultiGrader

TYPES: dict[str, type[RequestModel]] = {
    "string_check": StringCheckGrader,
    "text_similarity": TextSimilarityGrader,
    "score_model": ScoreModelGrader,
    "label_model": LabelModelGrader,
    "python": PythonGrader,
    "multi": MultiGrader,
}


def _refuse(param: str, message: str, code: str = "invalid_grader") -> BadRequest:
    return BadRequest(f"{param}: {message}", param=param, code=code)


def _fields_only(loc: tuple) -> tuple:
    """The location without pydantic's union-member tags ('str', 'TextPart', 'list[...]')."""
    return tuple(
        p
        for p in loc
        if not (
            isinstance(p, str) and (p in ("str", "int", "float") or "[" in p or p[:1].isupper())
        )
    )


def _validated(model: type[RequestModel], raw: dict[str, Any], param: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": _fields_only(e["loc"])} for e in exc.errors()]
        # Of a union's members' complaints, the deepest is the one about what was meant.
        errors.sort(key=lambda e: -len(e["loc"]))
        field, message = validation_message(errors)
        at = f"{param}.{field}" if field else param
        raise _refuse(at, message) from None
    # A BadRequest (invalid_text from RequestModel) is raised as it is, with its own param.


def parse_grader(raw: Any, param: str = "grader", *, nested: bool = False) -> Grader:
    """A grader from its JSON, or a 400 pointing at what is wrong."""
    if not isinstance(raw, dict):
        raise _refuse(param, "a grader must be an object with a 'type'")
    kind = raw.get("type")
    if kind not in TYPES or (nested and kind == "multi"):
        allowed = [t for t in TYPES if not (nested and t == "multi")]
        raise _refuse(
            f"{param}.type",
            f"unknown grader type {kind!r}; the types are {', '.join(allowed)}"
            + (" (a multi grader cannot hold another)" if nested and kind == "multi" else ""),
        )
    if kind == "multi":
        return _parse_multi(raw, param)
    grader = _validated(TYPES[kind], raw, param)
    _check_single(grader, param)
    return grader


def _parse_multi(raw: dict[str, Any], param: str) -> MultiGrader:
    graders = raw.get("graders")
    # openai-python types `graders` as one grader; the API takes a {name: grader} object.
    if isinstance(graders, dict) and isinstance(graders.get("type"), str):
        graders = {str(graders.get("name") or "grader"): graders}
    if not isinstance(graders, dict) or not graders:
        raise _refuse(f"{param}.graders", "must be a non-empty object of {name: grader}")
    parsed = {
        name: parse_grader(sub, f"{param}.graders.{name}", nested=True)
        for name, sub in graders.items()
    }
    multi = _validated(MultiGrader, {**raw, "graders": {}}, param)
    multi.graders = parsed  # type: ignore[assignment]
    return multi


def _check_single(grader: SingleGrader, param: str) -> None:
    if isinstance(grader, StringCheckGrader | TextSimilarityGrader):
        check_template(grader.input, f"{param}.input")
        check_template(grader.reference, f"{param}.reference")
    elif isinstance(grader, ScoreModelGrader | LabelModelGrader):
        for i, message in enumerate(grader.input):
            for text, suffix in message.templates():
                check_template(text, f"{param}.input.{i}.{suffix}")
        if isinstance(grader, LabelModelGrader):
            _check_labels(grader, param)
    elif isinstance(grader, PythonGrader):
        check_source(grader.source, f"{param}.source")


def _check_labels(grader: LabelModelGrader, param: str) -> None:
    if len(set(grader.labels)) != len(grader.labels):
        raise _refuse(f"{param}.labels", "labels must be distinct")
    for i, label in enumerate(grader.passing_labels):
        if label not in grader.labels:
            raise _refuse(
                f"{param}.passing_labels.{i}", f"{label!r} is not one of labels {grader.labels}"
            )


def check_source(source: str, param: str) -> None:
    """The source parses and defines `grade(sample, item)` at top level (read, never run)."""
    if len(source.encode()) > MAX_SOURCE_BYTES:
        raise _refuse(param, f"the source is over {MAX_SOURCE_BYTES // 1024} kB")
    try:
        tree = ast.parse(source, filename="grader.py")
    except SyntaxError as exc:
        raise _refuse(param, f"the source does not parse: {exc.msg} (line {exc.lineno})") from None
    except ValueError as exc:  # e.g. a NUL byte
        raise _refuse(param, f"the source does not parse: {exc}") from None
    grade = next(
        (
            node
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "grade"
        ),
        None,
    )
    if grade is None:
        raise _refuse(param, "the source must define a top-level function grade(sample, item)")
    if isinstance(grade, ast.AsyncFunctionDef):
        raise _refuse(param, "grade must be a plain function, not async")
    positional = grade.args.posonlyargs + grade.args.args
    if grade.args.vararg is None and len(positional) < 2:
        raise _refuse(param, "grade must take two arguments: grade(sample, item)")
