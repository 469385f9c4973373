"""Everything a tenant can name in `model`: the base, its adapters, templates and aliases."""

from sqlalchemy.orm import Session

from app.aliases.repository import AliasRepository
from app.db import unix_time
from app.protocol.models import ModelCard, ModelList
from app.registry.repository import AdapterRepository
from app.templates.models import Template
from app.templates.repository import TemplateRepository


def list_models(session: Session, tenant: str, base_name: str) -> ModelList:
    cards = [ModelCard(id=base_name, created=0, owned_by="adaptd", kind="base")]
    for a in AdapterRepository(session, tenant).all_by_age():
        cards.append(
            ModelCard(
                id=a.name,
                created=unix_time(a.created_at),
                owned_by=tenant,
                kind="adapter",
                parent=a.parent,
            )
        )
    for t in TemplateRepository(session, tenant).all(order_by=(Template.name,)):
        cards.append(
            ModelCard(
                id=f"tmpl:{t.name}",
                created=unix_time(t.created_at),
                owned_by=tenant,
                kind="template",
            )
        )
    for al in AliasRepository(session, tenant).all_by_name():
        cards.append(
            ModelCard(id=al.name, created=unix_time(al.created_at), owned_by=tenant, kind="alias")
        )
    return ModelList(data=cards)
