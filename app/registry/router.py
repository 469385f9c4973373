"""DELETE /v1/models/{model}: delete a fine-tuned model, as OpenAI does."""

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel

from app.auth.dependencies import TenantDep
from app.db import SessionDep
from app.errors import ModelNotFound
from app.model_refs import ADAPTER_PREFIX
from app.registry import service
from app.routing.references import references_in
from app.settings import get_settings

router = APIRouter(prefix="/v1/models", tags=["models"])


class ModelDeleted(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool = True


@router.delete("/{model:path}", response_model=ModelDeleted)
def delete_model(
    model: str, request: Request, principal: TenantDep, session: SessionDep
) -> ModelDeleted:
    if not model.startswith(ADAPTER_PREFIX):
        raise ModelNotFound(model)  # only fine-tuned models can be deleted
    row = service.delete_adapter(
        session,
        principal.tenant,
        model,
        get_settings().adapters_dir,
        references_in(session, principal.tenant),
    )
    engine = getattr(request.app.state, "engine", None)
    if engine is not None:
        engine.forget_adapter(row.name)
    return ModelDeleted(id=row.name)
