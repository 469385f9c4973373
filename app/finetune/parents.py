"""Fine-tuning on top of an adapter: `model: "ft:..."` names the job's starting weights.

The new job starts from that adapter's LoRA weights and keeps its LoRA shape (rank, alpha,
target modules), on the same base model; the result is a new adapter whose manifest, model
card and registry row name the parent.
"""

from typing import Any

from sqlalchemy.orm import Session

from app.engine.loader import model_name
from app.errors import BadRequest
from app.registry import service as registry
from app.registry.models import Adapter

ADAPTER_PREFIX = "ft:"
# Fixed by the parent's weights: a continued job cannot change them.
LORA_SHAPE_KEYS = ("r", "alpha", "target_modules")


def is_adapter_name(model: str) -> bool:
    return model.startswith(ADAPTER_PREFIX)


def parent_adapter(
    session: Session, tenant: str, model: str, *, base_name: str, hyperparameters: dict[str, Any]
) -> Adapter:
    """The tenant's adapter named `model`, checked as a starting point for a new job."""
    row = registry.find_adapter(session, tenant, model)
    if row is None:
        raise BadRequest(
            f"Model '{model}' does not exist or is not yours to fine-tune.",
            param="model",
            code="model_not_found",
        )
    if model_name(row.base_model) != base_name:
        raise BadRequest(
            f"Model '{model}' was trained on '{row.base_model}'; this service fine-tunes "
            f"'{base_name}'.",
            param="model",
            code="model_not_available",
        )
    given = [key for key in LORA_SHAPE_KEYS if key in hyperparameters]
    if given:
        raise BadRequest(
            f"{', '.join(given)} cannot be set when fine-tuning '{model}': the new job keeps "
            "the parent adapter's LoRA shape.",
            param=f"hyperparameters.{given[0]}",
            code="invalid_hyperparameters",
        )
    return row


def lineage(row: Adapter) -> dict[str, Any]:
    """What a child's manifest records about its parent."""
    return {
        "name": row.name,
        "job_id": row.job_id,
        "base_model": row.base_model,
        "parent": row.parent,
    }
