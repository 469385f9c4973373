import re

from pydantic import BaseModel, Field, field_validator


class ApiKeyCreate(BaseModel):
    tenant: str = Field(min_length=1, max_length=64)
    name: str = Field(default="", max_length=200)
    is_admin: bool = False

    @field_validator("tenant")
    @classmethod
    def _tenant_slug(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise ValueError("tenant may hold only letters, digits, '_', '.' and '-'")
        return v


class ApiKeyRead(BaseModel):
    id: str
    object: str = "api_key"
    tenant: str
    name: str
    prefix: str
    is_admin: bool
    created_at: int


class ApiKeyCreated(ApiKeyRead):
    key: str  # shown once
