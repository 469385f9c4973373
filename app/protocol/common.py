from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.engine.sampling import SamplingParams
from app.engine.structured import OutputConstraint
from app.errors import BadRequest
from app.protocol.structured import asks_for_text, output_constraint
from app.protocol.values import RequestModel, Seed, db_int


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class StreamOptions(BaseModel):
    include_usage: bool = False


def _is_set(value: Any) -> bool:
    return value not in (None, 0, 0.0, False, "", [], {})


MAX_TOKEN_ID = 2**31 - 1  # logit_bias keys: larger than any vocabulary

# OpenAI fields that would change the answer and that adaptd cannot honour: refused, so a
# client never silently gets something other than what it asked for. Empty, zero and
# default values pass, since many clients send them with every request.
UNSUPPORTED: dict[str, Callable[[Any], bool]] = {
    "tools": _is_set,
    "functions": _is_set,
    "tool_choice": lambda v: v not in (None, "none", "auto"),
    "function_call": lambda v: v not in (None, "none", "auto"),
    "best_of": lambda v: v not in (None, 1),
    "suffix": _is_set,
    "audio": _is_set,
    "prediction": _is_set,
}


class GenerationRequest(RequestModel):
    """Fields shared by /v1/chat/completions and /v1/completions."""

    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields we do not use

    model: str = Field(min_length=1, max_length=512)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: Seed | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=8)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None  # token id (as text) -> bias, -100 to 100
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # Extra variables for template variants ({{ input }} comes from the request itself).
    variables: dict[str, Any] | None = None
    # Structured output: OpenAI's response_format, or vLLM's structured_outputs extension
    # ({"choice": [...]} | {"regex": "..."} | {"json": {...}}); checked by output_constraint().
    response_format: Any = None
    structured_outputs: Any = None

    @model_validator(mode="after")
    def _check_stop(self) -> "GenerationRequest":
        stops = self.stop_list()
        if len(stops) > 4:
            raise ValueError("stop: at most 4 sequences")
        if any(not s for s in stops):
            raise ValueError("stop: sequences must not be empty")
        return self

    def check_supported(self) -> None:
        """Raises a 400 naming the first field this server cannot honour."""
        extra = self.model_extra or {}
        for name, refused in UNSUPPORTED.items():
            if name in extra and refused(extra[name]):
                raise BadRequest(
                    f"'{name}' is not supported by this server; leave it out or unset.",
                    param=name,
                    code="unsupported_parameter",
                )

    @field_validator("logit_bias")
    @classmethod
    def _check_logit_bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for key, bias in (v or {}).items():
            token = db_int(key)
            if token is None or token > MAX_TOKEN_ID:
                raise ValueError(f"keys must be token ids, got '{key}'")
            if not -100 <= bias <= 100:
                raise ValueError(f"biases must be -100 to 100, got {bias}")
        if v and len(v) > 300:
            raise ValueError("at most 300 token ids")
        return v

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def output_constraint(self) -> OutputConstraint | None:
        """What the request asks its output to keep to; 400 invalid_response_format if bad."""
        return output_constraint(self.response_format, self.structured_outputs)

    def asks_for_text(self) -> bool:
        """`response_format: {"type": "text"}`: free text, even on a template whose versions
        default to a constraint."""
        return asks_for_text(self.response_format)

    def requested_logprobs(self) -> int | None:
        """None: no log-probabilities; else how many alternatives per token."""
        return None

    def to_sampling_params(
        self,
        defaults: dict[str, Any] | None = None,
        *,
        max_tokens: int,
        constraint: OutputConstraint | None = None,
    ) -> SamplingParams:
        """Request fields win over a variant's defaults, which win over OpenAI's defaults."""
        defaults = defaults or {}
        temperature = (
            self.temperature if self.temperature is not None else defaults.get("temperature", 1.0)
        )
        top_p = self.top_p if self.top_p is not None else defaults.get("top_p", 1.0)
        stop = self.stop_list() or list(defaults.get("stop", []))
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=float(temperature),
            top_p=float(top_p),
            seed=self.seed,
            stop=tuple(stop),
            logprobs=self.requested_logprobs(),
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            logit_bias=tuple((int(t), float(b)) for t, b in (self.logit_bias or {}).items()),
            constraint=constraint,
        )


FinishReason = Literal["stop", "length"]


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None
