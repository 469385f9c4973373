from datetime import datetime

from sqlalchemy import JSON, DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, utcnow


class Adapter(Base):
    """Registered LoRA weights. Written only after the files are complete on disk."""

    __tablename__ = "adapters"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)  # ft:<base>:<suffix>:<job>
    job_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    base_model: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(String(255))  # relative to DATA_DIR/adapters
    bytes: Mapped[int] = mapped_column(Integer, default=0)
    manifest: Mapped[dict] = mapped_column(JSON, default=dict)
    # The adapter this one was trained on top of (its name; it may since have been deleted).
    parent: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
