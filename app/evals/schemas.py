from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.protocol.values import RequestModel, Seed


class EvalGeneration(BaseModel):
    # A misspelt key would silently run with the default: refused instead.
    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(default=16, ge=1, le=512)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    seed: Seed | None = 0


class EvalCreate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    file_id: str = Field(min_length=1, max_length=64)
    variants: list[str] = Field(min_length=1, max_length=8)
    metric: Literal["exact", "label", "contains"] = "label"
    generation: EvalGeneration = Field(default_factory=EvalGeneration)
    limit: int | None = Field(default=None, ge=1, le=5000)  # evaluate the first N examples

    @field_validator("variants")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each variant may appear once")
        return v


class EvalEventRead(BaseModel):
    object: Literal["eval.event"] = "eval.event"
    id: int
    created_at: int
    message: str
    data: dict[str, Any] | None = None


class EvalRead(BaseModel):
    id: str
    object: Literal["eval"] = "eval"
    status: str
    file_id: str
    variants: list[str]
    metric: str
    generation: EvalGeneration
    limit: int | None = None
    created_at: int
    finished_at: int | None = None
    error: dict[str, Any] | None = None
    report: dict[str, Any] | None = None


class EvalList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EvalRead]
    has_more: bool


class EvalEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EvalEventRead]
