"""What the console offers in its variant pickers: the names the inference endpoint accepts."""

from sqlalchemy.orm import Session

from app.dependencies import base_model_name
from app.inference.models_list import list_models


def callable_models(session: Session, tenant: str) -> list[str]:
    """The base, adapters, templates and aliases, as /v1/models lists them."""
    return [card.id for card in list_models(session, tenant, base_model_name()).data]


def base_and_adapters(session: Session, tenant: str) -> list[str]:
    """What a template may run on."""
    cards = list_models(session, tenant, base_model_name()).data
    return [card.id for card in cards if card.kind in ("base", "adapter")]
