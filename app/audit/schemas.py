from typing import Any, Literal

from pydantic import BaseModel

from app.audit.models import AuditEvent
from app.db import unix_time


class AuditEventRead(BaseModel):
    id: int
    object: Literal["audit_event"] = "audit_event"
    created_at: int
    tenant: str
    actor_key_id: str | None
    action: str
    object_type: str
    object_id: str
    request_id: str | None
    details: dict[str, Any] | None

    @classmethod
    def of(cls, row: AuditEvent) -> "AuditEventRead":
        return cls(
            id=row.id,
            created_at=unix_time(row.created_at),
            tenant=row.tenant,
            actor_key_id=row.actor_key_id,
            action=row.action,
            object_type=row.object_type,
            object_id=row.object_id,
            request_id=row.request_id,
            details=row.details,
        )


class AuditEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AuditEventRead]
    has_more: bool
