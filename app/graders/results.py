"""What running a grader answers, in OpenAI's shapes (`GraderRunResponse`)."""

from typing import Any

from pydantic import BaseModel, Field


class ErrorFlags(BaseModel):
    """OpenAI's `metadata.errors`: which kinds of failure happened (a failed grader scores 0)."""

    formula_parse_error: bool = False
    invalid_variable_error: bool = False
    model_grader_parse_error: bool = False
    model_grader_refusal_error: bool = False
    model_grader_server_error: bool = False
    model_grader_server_error_details: str | None = None
    other_error: bool = False
    python_grader_runtime_error: bool = False
    python_grader_runtime_error_details: str | None = None
    python_grader_server_error: bool = False
    python_grader_server_error_type: str | None = None
    sample_parse_error: bool = False
    truncated_observation_error: bool = False
    unresponsive_reward_error: bool = False

    def any(self) -> bool:
        return any(value is True for value in self.model_dump().values())

    def merge(self, other: "ErrorFlags") -> None:
        for name, value in other.model_dump().items():
            if value is True or (value is not None and getattr(self, name) is None):
                setattr(self, name, value)


class TokenUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def add(self, prompt: int, completion: int) -> None:
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.total_tokens += prompt + completion


class RunMetadata(BaseModel):
    name: str
    type: str
    errors: ErrorFlags
    execution_time: float
    scores: dict[str, Any]
    token_usage: int | None = None
    sampled_model_name: str | None = None


class GraderRunResponse(BaseModel):
    reward: float
    metadata: RunMetadata
    sub_rewards: dict[str, Any] = Field(default_factory=dict)
    model_grader_token_usage_per_model: dict[str, TokenUsage] = Field(default_factory=dict)


class GraderValidateResponse(BaseModel):
    grader: dict[str, Any]
