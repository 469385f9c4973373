"""Templates API types."""

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.protocol.chat import ChatMessage
from app.protocol.values import RequestModel, UtcDatetime, Version

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
# Tags start with a letter so that `name@3` is always a version and `name@prod` a tag.
TAG_PATTERN = r"[A-Za-z][A-Za-z0-9_.-]{0,63}"
VARIABLE_PATTERN = r"[A-Za-z][A-Za-z0-9_]{0,63}"
RESERVED_TAGS = frozenset({"latest"})
MAX_EXAMPLES = 1000


class ExampleSelection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule: Literal["all", "first_k", "similar_k"] = "all"
    k: int | None = Field(default=None, ge=1, le=MAX_EXAMPLES)

    @model_validator(mode="after")
    def _k_for_rule(self) -> "ExampleSelection":
        if self.rule != "all" and self.k is None:
            raise ValueError(f"k is required for rule '{self.rule}'")
        return self


class GenerationDefaults(BaseModel):
    """Defaults a request may override field by field."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: list[str] | None = Field(default=None, max_length=4)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list) and any(not s for s in v):
            raise ValueError("stop sequences must not be empty")
        return v


def _check_examples(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for i, example in enumerate(examples):
        for field in ("input", "output"):
            if not isinstance(example.get(field), str):
                raise ValueError(f"examples[{i}] needs a string '{field}'")
        for key in example:
            if not re.fullmatch(VARIABLE_PATTERN, key):
                raise ValueError(
                    f"examples[{i}]: field name '{key}' must be letters, digits and '_'"
                )
    return examples


def _check_variables(v: Any) -> Any:
    """A list of names (each required) or a mapping of name -> default (null: required)."""
    if isinstance(v, list):
        v = {name: None for name in v}
    if isinstance(v, dict):
        for name in v:
            if not isinstance(name, str) or not re.fullmatch(VARIABLE_PATTERN, name):
                raise ValueError(f"variable name '{name}' must be letters, digits and '_'")
            if name in ("input", "output"):
                raise ValueError(f"'{name}' is filled by the request or example, not declared")
    return v


class TemplateSpec(RequestModel):
    """Everything one version holds. Used whole on create and as a patch on new versions."""

    model_config = ConfigDict(extra="forbid")

    system_prompt: str = Field(default="", max_length=32_000)
    instruction: str = Field(default="{{ input }}", min_length=1, max_length=16_000)
    examples: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_EXAMPLES)
    example_selection: ExampleSelection = Field(default_factory=ExampleSelection)
    params: GenerationDefaults = Field(default_factory=GenerationDefaults)
    # Extra request variables: names the instruction may use beyond `input` and example
    # fields, each with a default (null: every request must send it in `variables`).
    variables: dict[str, str | None] = Field(default_factory=dict, max_length=64)
    model: str | None = Field(default=None, min_length=1, max_length=255)
    # Default output constraint, in vLLM's structured_outputs shape: {"choice": [...]},
    # {"regex": "..."} or {"json": {schema}}; {} or null: free text.
    output_constraint: dict[str, Any] | None = None

    @field_validator("examples")
    @classmethod
    def _examples(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return _check_examples(v)

    @field_validator("variables", mode="before")
    @classmethod
    def _variables(cls, v: Any) -> Any:
        return _check_variables(v)


class TemplateCreate(TemplateSpec):
    name: str

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not re.fullmatch(NAME_PATTERN, v):
            raise ValueError(
                "must start with a letter or digit, then letters, digits, '_', '.', '-'; "
                "at most 128 characters"
            )
        return v


class TemplatePatch(RequestModel):
    """A new version: fields left out are copied from the newest version."""

    model_config = ConfigDict(extra="forbid")

    system_prompt: str | None = Field(default=None, max_length=32_000)
    instruction: str | None = Field(default=None, min_length=1, max_length=16_000)
    examples: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_EXAMPLES)
    example_selection: ExampleSelection | None = None
    params: GenerationDefaults | None = None
    variables: dict[str, str | None] | None = Field(default=None, max_length=64)
    model: str | None = Field(default=None, min_length=1, max_length=255)
    # Left out or null: the newest version's; {}: none.
    output_constraint: dict[str, Any] | None = None

    @field_validator("examples")
    @classmethod
    def _examples(cls, v: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        return v if v is None else _check_examples(v)

    @field_validator("variables", mode="before")
    @classmethod
    def _variables(cls, v: Any) -> Any:
        return _check_variables(v)


class TagMove(RequestModel):
    version: Version


class TemplateVersionRead(BaseModel):
    object: Literal["template.version"] = "template.version"
    name: str
    version: int
    model: str
    system_prompt: str
    instruction: str
    examples: list[dict[str, Any]]
    example_selection: ExampleSelection
    params: GenerationDefaults
    variables: dict[str, str | None]
    output_constraint: dict[str, Any] | None = None
    created_at: UtcDatetime


class TemplateRead(BaseModel):
    id: str
    object: Literal["template"] = "template"
    name: str
    latest_version: int
    versions: list[int]
    tags: dict[str, int]
    created_at: UtcDatetime
    latest: TemplateVersionRead


class TemplateSummary(BaseModel):
    id: str
    object: Literal["template"] = "template"
    name: str
    latest_version: int
    model: str
    tags: dict[str, int]
    created_at: UtcDatetime


class TemplateList(BaseModel):
    object: Literal["list"] = "list"
    data: list[TemplateSummary]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class TemplateVersionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[TemplateVersionRead]


class RenderRequest(RequestModel):
    """Either chat `messages`, or an `input` (chat unless mode says completion), or a
    completion-style `prompt`."""

    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    input: str | None = None
    prompt: str | None = None
    mode: Literal["chat", "completion"] | None = None
    variables: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> "RenderRequest":
        given = [f for f in ("messages", "input", "prompt") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of messages, input or prompt")
        if self.messages is not None and self.mode == "completion":
            raise ValueError("messages render in chat mode; use prompt or input")
        if self.prompt is not None and self.mode == "chat":
            raise ValueError("prompt renders in completion mode; use messages or input")
        return self

    def resolved_mode(self) -> str:
        if self.mode is not None:
            return self.mode
        return "completion" if self.prompt is not None else "chat"


class RenderResponse(BaseModel):
    object: Literal["template.render"] = "template.render"
    model: str  # the tmpl:name@version that was rendered
    template: str
    version: int
    mode: Literal["chat", "completion"]
    prompt: str  # exactly the text the model receives (its control tokens: the chat template's)
    prompt_tokens: int
    prefix_tokens: int  # leading tokens shared by every request of this version
    examples_used: int
    examples: list[int]  # indices into the version's examples, in prompt order
    messages: list[dict[str, str]] | None = None  # chat mode: what went into the chat template
