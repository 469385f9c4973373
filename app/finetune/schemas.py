"""OpenAI fine-tuning wire types (jobs, events, checkpoints) with adaptd's LoRA settings.

LoRA settings may be given in `method.supervised.hyperparameters` (r, alpha, dropout,
target_modules) or in `method.supervised.lora`; the latter wins where both name a value.
"""

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.protocol.values import RequestModel

SUFFIX_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,38}[a-z0-9])?$")
Auto = Literal["auto"]


class LoraParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: Annotated[int, Field(ge=1, le=256)] | None = None
    alpha: Annotated[int, Field(ge=1, le=4096)] | None = None
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] | None = None
    target_modules: Annotated[list[str], Field(min_length=1, max_length=32)] | None = None

    @field_validator("target_modules")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not all(re.fullmatch(r"[A-Za-z0-9_.]{1,64}", v) for v in value):
            raise ValueError("target_modules must be module names such as 'q_proj'")
        return value


class Hyperparameters(LoraParams):
    n_epochs: Auto | Annotated[int, Field(ge=1, le=200)] = "auto"
    batch_size: Auto | Annotated[int, Field(ge=1, le=256)] = "auto"
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=100)] = "auto"
    # adaptd's: stop after this many epochs without a better validation loss.
    early_stopping_patience: Annotated[int, Field(ge=1, le=100)] | None = None


class Supervised(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: Hyperparameters | None = None
    lora: LoraParams | None = None


class DpoHyperparameters(Hyperparameters):
    # How far the policy may move from the reference: larger keeps it closer.
    beta: Auto | Annotated[float, Field(gt=0, le=10)] = "auto"


class Dpo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: DpoHyperparameters | None = None
    lora: LoraParams | None = None


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised", "dpo"] = "supervised"
    supervised: Supervised | None = None
    dpo: Dpo | None = None


class JobCreate(RequestModel):
    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = None
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    # The older top-level form; `method.supervised.hyperparameters` takes precedence.
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    metadata: dict[str, str] | None = None
    integrations: list[Any] | None = None

    @field_validator("suffix")
    @classmethod
    def _slug(cls, value: str | None) -> str | None:
        if value is not None and not SUFFIX_PATTERN.match(value):
            raise ValueError(
                "suffix must be 1-40 lowercase letters, digits, '-' or '_', "
                "starting and ending with a letter or digit"
            )
        return value

    def explicit_lora_settings(self) -> dict[str, Any]:
        """The LoRA shape values the request set (for a job on top of an adapter)."""
        merged = self.merged_hyperparameters()
        return {k: merged[k] for k in ("r", "alpha", "target_modules") if k in merged}

    def merged_hyperparameters(self) -> dict[str, Any]:
        """One flat dict: n_epochs, batch_size, learning_rate_multiplier, r, alpha, ..."""
        merged: dict[str, Any] = {}
        method = self.method_type()
        chosen = (
            (self.method.dpo if method == "dpo" else self.method.supervised)
            if self.method
            else None
        )
        for part in (
            self.hyperparameters,
            chosen.hyperparameters if chosen else None,
            chosen.lora if chosen else None,
        ):
            if part is not None:
                merged.update(part.model_dump(exclude_unset=True, exclude_none=True))
        for key in ("n_epochs", "batch_size", "learning_rate_multiplier"):
            merged.setdefault(key, "auto")
        if method == "dpo":
            merged.setdefault("beta", "auto")
        return merged

    def method_type(self) -> str:
        return self.method.type if self.method else "supervised"


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class JobHyperparameters(BaseModel):
    n_epochs: int | Auto
    batch_size: int | Auto
    learning_rate_multiplier: float | Auto
    # adaptd extensions, once the worker has resolved "auto": the absolute rate, and what
    # auto chose and why.
    learning_rate: float | None = None
    auto_reason: str | None = None


class JobRead(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: JobHyperparameters
    method: dict[str, Any]
    model: str
    organization_id: str
    result_files: list[str] = []
    seed: int
    status: str
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    suffix: str | None = None
    estimated_finish: int | None = None
    integrations: list[Any] | None = None
    metadata: dict[str, str] | None = None
    # adaptd extensions
    attempts: int = 0


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobRead]
    has_more: bool = False


class EventRead(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str
    message: str
    type: str
    data: dict[str, Any] | None = None


class EventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EventRead]
    has_more: bool = False


class CheckpointRead(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, Any]
    step_number: int


class CheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CheckpointRead]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None
