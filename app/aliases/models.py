from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, utcnow


class Alias(Base):
    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("tenant", "name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(128))
    current_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AliasVersion(Base):
    """Every repointing is a new row, so history and rollback are free."""

    __tablename__ = "alias_versions"
    __table_args__ = (UniqueConstraint("alias_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alias_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("aliases.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    targets: Mapped[list] = mapped_column(JSON)  # [{"model": str, "weight": float}]
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AliasCounter(Base):
    __tablename__ = "alias_counters"

    alias_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("aliases.id", ondelete="CASCADE"), primary_key=True
    )
    model: Mapped[str] = mapped_column(String(255), primary_key=True)
    requests: Mapped[int] = mapped_column(Integer, default=0)
