"""GET /v1/admin/audit: the audit trail, newest first. HTTP only."""

from typing import Annotated

from fastapi import APIRouter, Query

from app.audit import service
from app.audit.schemas import AuditEventList, AuditEventRead
from app.auth.dependencies import AdminDep
from app.db import SessionDep
from app.protocol.values import DB_INT_MAX

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.get("/audit", response_model=AuditEventList)
def list_audit_events(
    session: SessionDep,
    actor: AdminDep,
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=32)] = None,
    after: Annotated[int | None, Query(ge=1, le=DB_INT_MAX)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> AuditEventList:
    rows, has_more = service.list_events(
        session, actor, tenant=tenant, action=action, after=after, limit=limit
    )
    return AuditEventList(data=[AuditEventRead.of(r) for r in rows], has_more=has_more)
