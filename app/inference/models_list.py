"""Everything a tenant can name in `model`: the base, its adapters, templates and aliases."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.aliases.models import Alias
from app.db import unix_time
from app.protocol.models import ModelCard, ModelList
from app.registry.models import Adapter
from app.templates.models import Template

_SERVER_START = 0


def _ts(dt) -> int:  # noqa: ANN001
    return unix_time(dt) or 0


def list_models(session: Session, tenant: str, base_name: str) -> ModelList:
    cards = [ModelCard(id=base_name, created=_SERVER_START, owned_by="adaptd", kind="base")]
    for a in session.scalars(
        select(Adapter).where(Adapter.tenant == tenant).order_by(Adapter.created_at)
    ):
        cards.append(
            ModelCard(id=a.name, created=_ts(a.created_at), owned_by=tenant, kind="adapter")
        )
    for t in session.scalars(
        select(Template).where(Template.tenant == tenant).order_by(Template.name)
    ):
        cards.append(
            ModelCard(
                id=f"tmpl:{t.name}", created=_ts(t.created_at), owned_by=tenant, kind="template"
            )
        )
    for al in session.scalars(select(Alias).where(Alias.tenant == tenant).order_by(Alias.name)):
        cards.append(
            ModelCard(id=al.name, created=_ts(al.created_at), owned_by=tenant, kind="alias")
        )
    return ModelList(data=cards)
