"""Everything a tenant can name in `model`: the base, its adapters, templates and aliases."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.aliases.models import Alias
from app.db import unix_time
from app.protocol.models import ModelCard, ModelList
from app.registry.models import Adapter
from app.templates.models import Template


def list_models(session: Session, tenant: str, base_name: str) -> ModelList:
    cards = [ModelCard(id=base_name, created=0, owned_by="adaptd", kind="base")]
    for a in session.scalars(
        select(Adapter).where(Adapter.tenant == tenant).order_by(Adapter.created_at)
    ):
        cards.append(
            ModelCard(
                id=a.name,
                created=unix_time(a.created_at),
                owned_by=tenant,
                kind="adapter",
                parent=a.parent,
            )
        )
    for t in session.scalars(
        select(Template).where(Template.tenant == tenant).order_by(Template.name)
    ):
        cards.append(
            ModelCard(
                id=f"tmpl:{t.name}",
                created=unix_time(t.created_at),
                owned_by=tenant,
                kind="template",
            )
        )
    for al in session.scalars(select(Alias).where(Alias.tenant == tenant).order_by(Alias.name)):
        cards.append(
            ModelCard(id=al.name, created=unix_time(al.created_at), owned_by=tenant, kind="alias")
        )
    return ModelList(data=cards)
