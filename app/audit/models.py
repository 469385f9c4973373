from datetime import datetime

from sqlalchemy import JSON, DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, utcnow


class AuditEvent(Base):
    __tablename__ = "audit_events"

    # Increasing, so "newest first" and the `after` cursor need no tie-break.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    tenant: Mapped[str] = mapped_column(String(64), index=True)  # the object's tenant
    actor_key_id: Mapped[str | None] = mapped_column(String(40), nullable=True)  # None: system
    action: Mapped[str] = mapped_column(String(32))  # e.g. key.revoke, alias.repoint
    object_type: Mapped[str] = mapped_column(String(16))
    object_id: Mapped[str] = mapped_column(String(255))
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    details: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # never a secret
