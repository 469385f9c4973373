"""Reading the audit trail: newest first, a tenant admin its own tenant only."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.models import AuditEvent
from app.auth.service import Principal


def list_events(
    session: Session,
    actor: Principal,
    *,
    tenant: str | None = None,
    action: str | None = None,
    after: int | None = None,
    limit: int = 20,
) -> tuple[list[AuditEvent], bool]:
    query = select(AuditEvent).order_by(AuditEvent.id.desc())
    if not actor.platform:
        query = query.where(AuditEvent.tenant == actor.tenant)
    if tenant is not None:
        query = query.where(AuditEvent.tenant == tenant)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    if after is not None:
        query = query.where(AuditEvent.id < after)
    rows = list(session.scalars(query.limit(limit + 1)))
    return rows[:limit], len(rows) > limit
