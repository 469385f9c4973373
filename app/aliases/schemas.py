import re

from pydantic import BaseModel, Field, field_validator

from app.protocol.values import RequestModel, Version

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"


class AliasTarget(BaseModel):
    model: str = Field(min_length=1, max_length=512)
    weight: float = Field(default=1.0, gt=0.0, le=1_000_000.0)


class _Targets(RequestModel):
    targets: list[AliasTarget] = Field(min_length=1, max_length=16)

    @field_validator("targets")
    @classmethod
    def _unique(cls, v: list[AliasTarget]) -> list[AliasTarget]:
        models = [t.model for t in v]
        if len(set(models)) != len(models):
            raise ValueError("each model may appear once in targets")
        return v


class AliasCreate(_Targets):
    name: str

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not re.fullmatch(NAME_PATTERN, v):
            raise ValueError("name: letters, digits, '_', '.', '-'; at most 128 characters")
        return v


class AliasUpdate(_Targets):
    pass


class AliasRollback(RequestModel):
    version: Version | None = None  # default: the version before the current


class AliasVersionRead(BaseModel):
    version: int
    targets: list[AliasTarget]
    created_at: int


class AliasRead(BaseModel):
    id: str
    object: str = "alias"
    name: str
    version: int
    targets: list[AliasTarget]
    requests: dict[str, int]  # per concrete variant
    created_at: int


class AliasList(BaseModel):
    object: str = "list"
    data: list[AliasRead]


class AliasHistory(BaseModel):
    object: str = "list"
    data: list[AliasVersionRead]
