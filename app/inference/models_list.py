"""Everything a tenant can name in `model`: the base, its adapters, templates and aliases."""

from datetime import datetime

from sqlalchemy.orm import Session

from app.aliases.repository import AliasRepository
from app.db import unix_time
from app.protocol.models import ModelCard, ModelList
from app.registry.repository import AdapterRepository
from app.routing.resolve import resolve
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


def retrieve_model(session: Session, tenant: str, model: str, base_name: str) -> ModelCard:
    """One model card for any name a request may use; ModelNotFound (404) for names that are
    unknown or another tenant's, exactly as a chat request would fail."""
    variant = resolve(session, tenant, model, base_name, count_alias=False)
    if variant.alias is not None:
        alias = AliasRepository(session, tenant).by_name(variant.alias)
        return _card(model, alias.created_at if alias else None, tenant, "alias")
    if variant.kind == "base":
        return ModelCard(id=model, created=0, owned_by="adaptd", kind="base")
    if variant.kind == "adapter":
        row = AdapterRepository(session, tenant).by_name(model)
        card = _card(model, row.created_at if row else None, tenant, "adapter")
        card.parent = row.parent if row else None  # as the list shows it
        return card
    assert variant.template is not None
    template = TemplateRepository(session, tenant).by_name(variant.template.name)
    return _card(model, template.created_at if template else None, tenant, "template")


def _card(model: str, created: datetime | None, tenant: str, kind: str) -> ModelCard:
    return ModelCard(id=model, created=unix_time(created) or 0, owned_by=tenant, kind=kind)
