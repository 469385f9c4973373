"""Registered adapters: lookup for serving, listing. Writing lives with the trainer."""

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.engine.adapters import AdapterRef
from app.registry.models import Adapter


def find_adapter(session: Session, tenant: str, name: str) -> Adapter | None:
    return session.scalar(select(Adapter).where(Adapter.tenant == tenant, Adapter.name == name))


def list_adapters(session: Session, tenant: str) -> list[Adapter]:
    return list(
        session.scalars(
            select(Adapter).where(Adapter.tenant == tenant).order_by(Adapter.created_at)
        )
    )


def adapter_ref(row: Adapter, adapters_dir: Path) -> AdapterRef:
    return AdapterRef(name=row.name, path=(adapters_dir / row.path).resolve())
