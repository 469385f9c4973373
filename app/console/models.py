from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base


class ConsoleSignIn(Base):
    """One live console session. The cookie alone proves who signed in; this row says the
    session has not been ended since (signing out deletes it, so a copied cookie dies too)."""

    __tablename__ = "console_sessions"

    nonce: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(40), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
