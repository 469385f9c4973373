import re
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.auth.models import ApiKey
from app.auth.service import DEFAULT_SCOPES, Scope, key_status
from app.db import unix_time
from app.protocol.values import RequestModel

# Unix seconds up to the end of year 9999: what a datetime column can hold.
MAX_UNIX_TIME = 253402300800
MAX_GRACE_S = 30 * 24 * 3600


def from_unix(seconds: int | None) -> datetime | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


class ApiKeyCreate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    # Omitted: the caller's own tenant. Other tenants need a platform admin key.
    tenant: str | None = Field(default=None, min_length=1, max_length=64)
    name: str = Field(default="", max_length=200)
    scopes: list[Scope] = Field(default_factory=lambda: list(DEFAULT_SCOPES), min_length=1)
    is_admin: bool = False  # shorthand for adding the "admin" scope
    platform: bool = False
    expires_at: int | None = Field(default=None, gt=0, lt=MAX_UNIX_TIME)

    @field_validator("tenant")
    @classmethod
    def _tenant_slug(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise ValueError("tenant may hold only letters, digits, '_', '.' and '-'")
        return v

    def requested_scopes(self) -> list[str]:
        return list(self.scopes) + (["admin"] if self.is_admin else [])


class ApiKeyRotate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    # How long the old secret keeps working, so clients can switch over without downtime.
    grace_period_s: int = Field(default=0, ge=0, le=MAX_GRACE_S)


class ApiKeyRead(BaseModel):
    id: str
    object: str = "api_key"
    tenant: str
    name: str
    prefix: str  # the first characters of the secret, to recognise it
    scopes: list[str]
    is_admin: bool
    platform: bool
    status: Literal["active", "revoked", "expired"]
    created_at: int
    created_by: str | None = None
    last_used_at: int | None = None
    expires_at: int | None = None
    revoked_at: int | None = None
    previous_valid_until: int | None = None

    @classmethod
    def of(cls, row: ApiKey) -> "ApiKeyRead":
        return cls(**_fields(row))


class ApiKeyCreated(ApiKeyRead):
    key: str  # shown once

    @classmethod
    def of_new(cls, row: ApiKey, key: str) -> "ApiKeyCreated":
        return cls(**_fields(row), key=key)


class ApiKeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ApiKeyRead]
    has_more: bool


class ApiKeyDeleted(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    deleted: bool = True


def _fields(row: ApiKey) -> dict:
    return {
        "id": row.id,
        "tenant": row.tenant,
        "name": row.name,
        "prefix": row.prefix,
        "scopes": list(row.scopes),
        "is_admin": "admin" in row.scopes,
        "platform": row.platform,
        "status": key_status(row),
        "created_at": unix_time(row.created_at),
        "created_by": row.created_by,
        "last_used_at": unix_time(row.last_used_at),
        "expires_at": unix_time(row.expires_at),
        "revoked_at": unix_time(row.revoked_at),
        "previous_valid_until": unix_time(row.previous_valid_until),
    }
