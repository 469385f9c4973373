"""/v1/models, /v1/chat/completions, /v1/completions: HTTP only. The variant lookup and the
prompt building happen here; serving_chat / serving_completion shape the response."""

import threading
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session

from app.auth.dependencies import TenantDep
from app.auth.service import Principal
from app.db import SessionDep
from app.dependencies import BaseModelNameDep, EngineDep, base_model_name, get_engine
from app.engine.protocol import InferenceEngine
from app.inference.disconnect import cancel_on_disconnect, run_until_disconnected
from app.inference.key_recheck import while_key_is_good
from app.inference.models_list import list_models, retrieve_model
from app.inference.prompting import PreparedPrompt, prepare_chat, prepare_completion
from app.inference.serving_chat import create_chat_completion
from app.inference.serving_completion import create_completion
from app.protocol.chat import ChatCompletion, ChatCompletionRequest
from app.protocol.completions import Completion, CompletionRequest
from app.protocol.models import ModelCard, ModelList
from app.routing.resolve import Variant, resolve
from app.settings import get_settings

router = APIRouter(prefix="/v1", tags=["inference"])

VARIANT_HEADER = "x-adaptd-variant"


def _variant_headers(variant: Variant) -> dict[str, str]:
    headers = {VARIANT_HEADER: variant.model}
    if variant.alias:
        headers["x-adaptd-alias"] = variant.alias
    return headers


def _respond(
    result: BaseModel | AsyncIterator[str],
    variant: Variant,
    response: Response,
    principal: Principal,
) -> BaseModel | StreamingResponse:
    headers = _variant_headers(variant)
    if isinstance(result, BaseModel):
        response.headers.update(headers)
        return result
    stream = while_key_is_good(result, principal, get_settings().stream_key_recheck_s)
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


# The database lookup and the prompt building (Jinja, example embeddings, tokenising) run in
# the threadpool, so neither holds up the event loop that streams every other response; a
# client that leaves meanwhile stops its template renders.
def _variant(session: Session, tenant: str, model: str) -> Variant:
    variant = resolve(session, tenant, model, base_model_name())
    session.close()  # generation can take a while: give the connection back now
    return variant


# `stop` is set when the client leaves: a grammar being compiled for it is stopped (renders
# read it through run_until_disconnected's context).
def _chat_prompt(
    session: Session,
    tenant: str,
    engine: InferenceEngine,
    req: ChatCompletionRequest,
    stop: threading.Event,
) -> tuple[Variant, PreparedPrompt]:
    variant = _variant(session, tenant, req.model)
    return variant, prepare_chat(engine, variant, req, stop)


def _completion_prompts(
    session: Session,
    tenant: str,
    engine: InferenceEngine,
    req: CompletionRequest,
    stop: threading.Event,
) -> tuple[Variant, list[PreparedPrompt]]:
    variant = _variant(session, tenant, req.model)
    return variant, [prepare_completion(engine, variant, p, req, stop) for p in req.prompts()]


# The model list answers once the model is up (503 while it loads), as the endpoints that run it.
@router.get("/models", response_model=ModelList, dependencies=[Depends(get_engine)])
def models(principal: TenantDep, session: SessionDep, base: BaseModelNameDep) -> ModelList:
    return list_models(session, principal.tenant, base)


# `:path`, so a hub id with a slash works as the base name; DELETE is in registry/router.py.
@router.get("/models/{model:path}", response_model=ModelCard, dependencies=[Depends(get_engine)])
def model_card(
    model: str, principal: TenantDep, session: SessionDep, base: BaseModelNameDep
) -> ModelCard:
    return retrieve_model(session, principal.tenant, model, base)


@router.post("/chat/completions", response_model=ChatCompletion)
async def chat_completions(
    req: ChatCompletionRequest,
    principal: TenantDep,
    session: SessionDep,
    engine: EngineDep,
    request: Request,
    response: Response,
):
    req.check_supported()
    variant, prepared = await run_until_disconnected(
        request, _chat_prompt, session, principal.tenant, engine, req
    )
    # A whole answer's client may give up while it generates: its rows stop then too.
    result = await cancel_on_disconnect(
        request, create_chat_completion(engine, variant, req, prepared)
    )
    return _respond(result, variant, response, principal)


@router.post("/completions", response_model=Completion)
async def completions(
    req: CompletionRequest,
    principal: TenantDep,
    session: SessionDep,
    engine: EngineDep,
    request: Request,
    response: Response,
):
    req.check_supported()
    variant, prompts = await run_until_disconnected(
        request, _completion_prompts, session, principal.tenant, engine, req
    )
    result = await cancel_on_disconnect(request, create_completion(engine, variant, req, prompts))
    return _respond(result, variant, response, principal)
