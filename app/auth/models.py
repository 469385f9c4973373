from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, utcnow


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    # sha256 of the full key; the key itself is shown once and never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    # Subset of inference | manage | admin (see service.SCOPES).
    scopes: Mapped[list[str]] = mapped_column(JSON)
    # A platform key's admin scope reaches every tenant; any other key's only its own.
    platform: Mapped[bool] = mapped_column(Boolean, default=False)
    # The row for ADAPTD_ADMIN_KEY: its secret lives in the environment, not here.
    bootstrap: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # Written at most once a minute per key, not on every request.
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # After a rotation the old secret stays valid until previous_valid_until.
    previous_key_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    previous_valid_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
