"""/v1/models, /v1/chat/completions, /v1/completions: protocol <-> engine, nothing more."""

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from app.auth.dependencies import TenantDep
from app.db import SessionDep
from app.engine.engine import Engine
from app.inference import service
from app.inference.dependencies import EngineDep
from app.inference.logprobs import chat_logprobs, completion_logprobs
from app.inference.models_list import list_models, retrieve_model
from app.inference.prompting import (
    PreparedPrompt,
    max_tokens_for,
    prepare_chat,
    prepare_completion,
)
from app.protocol.chat import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChatResponseMessage,
)
from app.protocol.completions import Completion, CompletionChoice, CompletionRequest
from app.protocol.models import ModelCard, ModelList
from app.routing.resolve import Variant, resolve

router = APIRouter(prefix="/v1", tags=["inference"])

VARIANT_HEADER = "x-adaptd-variant"


def _variant_headers(variant) -> dict[str, str]:  # noqa: ANN001
    headers = {VARIANT_HEADER: variant.model}
    if variant.alias:
        headers["x-adaptd-alias"] = variant.alias
    return headers


# The database lookup and the prompt building (Jinja, example embeddings, tokenising) run in
# the threadpool, so neither holds up the event loop that streams every other response.
def _variant(session: Session, tenant: str, engine: Engine, model: str) -> Variant:
    variant = resolve(session, tenant, model, engine.name)
    session.close()  # generation can take a while: give the connection back now
    return variant


def _chat_prompt(
    session: Session, tenant: str, engine: Engine, req: ChatCompletionRequest
) -> tuple[Variant, PreparedPrompt]:
    variant = _variant(session, tenant, engine, req.model)
    return variant, prepare_chat(engine, variant, req)


def _completion_prompts(
    session: Session, tenant: str, engine: Engine, req: CompletionRequest
) -> tuple[Variant, list[PreparedPrompt]]:
    variant = _variant(session, tenant, engine, req.model)
    return variant, [prepare_completion(engine, variant, p, req) for p in req.prompts()]


@router.get("/models", response_model=ModelList)
def models(principal: TenantDep, session: SessionDep, engine: EngineDep) -> ModelList:
    return list_models(session, principal.tenant, engine.name)


# `:path`, so a hub id with a slash works as the base name; DELETE is in registry/router.py.
@router.get("/models/{model:path}", response_model=ModelCard)
def model_card(
    model: str, principal: TenantDep, session: SessionDep, engine: EngineDep
) -> ModelCard:
    return retrieve_model(session, principal.tenant, model, engine.name)


@router.post("/chat/completions", response_model=ChatCompletion)
async def chat_completions(
    req: ChatCompletionRequest,
    principal: TenantDep,
    session: SessionDep,
    engine: EngineDep,
    response: Response,
):
    req.check_supported()
    variant, prepared = await run_in_threadpool(
        _chat_prompt, session, principal.tenant, engine, req
    )
    max_tokens = max_tokens_for(engine, req, len(prepared.token_ids), prepared.defaults)
    params = req.to_sampling_params(prepared.defaults, max_tokens=max_tokens)
    handles = service.submit_all(
        engine,
        variant,
        [(prepared.token_ids, service.seeded(params, i)) for i in range(req.n)],
        prefix_len=prepared.prefix_len,
    )
    rid, created = service.response_id("chatcmpl-")
    headers = _variant_headers(variant)
    prompt_tokens = len(prepared.token_ids)

    if req.stream:

        def chunk(
            index: int, text: str | None, finish: str | None, logprobs: tuple
        ) -> ChatCompletionChunk:
            delta = ChatDelta(content=text) if text is not None else ChatDelta()
            choice = ChatChunkChoice(index=index, delta=delta, finish_reason=finish)
            if logprobs:
                choice.logprobs = chat_logprobs(engine.tokenizer, logprobs)
            return ChatCompletionChunk(
                id=rid, created=created, model=variant.model, choices=[choice]
            )

        def usage_chunk(usage) -> ChatCompletionChunk:  # noqa: ANN001
            return ChatCompletionChunk(
                id=rid, created=created, model=variant.model, choices=[], usage=usage
            )

        async def body():
            # The role comes first, once per choice, as OpenAI sends it.
            for i in range(req.n):
                first = ChatCompletionChunk(
                    id=rid,
                    created=created,
                    model=variant.model,
                    choices=[
                        ChatChunkChoice(index=i, delta=ChatDelta(role="assistant", content=""))
                    ],
                )
                yield service.sse(first)
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            async for line in service.stream_sse(
                handles, chunk, usage_chunk if include_usage else None, prompt_tokens
            ):
                yield line

        return StreamingResponse(body(), media_type="text/event-stream", headers=headers)

    results = await service.collect(handles)
    response.headers.update(headers)
    return ChatCompletion(
        id=rid,
        created=created,
        model=variant.model,
        choices=[
            ChatChoice(
                index=i,
                message=ChatResponseMessage(content=r.text),
                finish_reason=service.finish_reason(r.finish_reason),
                logprobs=(
                    chat_logprobs(engine.tokenizer, r.logprobs) if r.logprobs is not None else None
                ),
            )
            for i, r in enumerate(results)
        ],
        usage=service.usage_of(results, prompt_tokens),
        examples_used=prepared.examples_used,
    )


@router.post("/completions", response_model=Completion)
async def completions(
    req: CompletionRequest,
    principal: TenantDep,
    session: SessionDep,
    engine: EngineDep,
    response: Response,
):
    req.check_supported()
    variant, prompts = await run_in_threadpool(
        _completion_prompts, session, principal.tenant, engine, req
    )
    jobs = []
    for prepared in prompts:
        max_tokens = max_tokens_for(engine, req, len(prepared.token_ids), prepared.defaults)
        params = req.to_sampling_params(prepared.defaults, max_tokens=max_tokens)
        jobs.extend((prepared.token_ids, service.seeded(params, i)) for i in range(req.n))
    # A template's prefix is the same for every prompt of the request.
    handles = service.submit_all(
        engine, variant, jobs, prefix_len=min(p.prefix_len for p in prompts)
    )
    rid, created = service.response_id("cmpl-")
    headers = _variant_headers(variant)
    prompt_tokens = sum(len(p.token_ids) for p in prompts) * req.n
    examples_used = prompts[0].examples_used

    if req.stream:
        streamed = [0] * len(jobs)  # characters sent so far per choice: the text offsets

        def chunk(index: int, text: str | None, finish: str | None, logprobs: tuple) -> Completion:
            choice = CompletionChoice(index=index, text=text or "", finish_reason=finish)
            if logprobs:
                choice.logprobs = completion_logprobs(
                    engine.tokenizer, logprobs, streamed[index], bool(req.logprobs)
                )
            streamed[index] += len(text or "")
            return Completion(id=rid, created=created, model=variant.model, choices=[choice])

        def usage_chunk(usage) -> Completion:  # noqa: ANN001
            return Completion(id=rid, created=created, model=variant.model, choices=[], usage=usage)

        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(
            service.stream_sse(
                handles, chunk, usage_chunk if include_usage else None, prompt_tokens
            ),
            media_type="text/event-stream",
            headers=headers,
        )

    results = await service.collect(handles)
    response.headers.update(headers)
    echoed = [req.prompts()[i // req.n] if req.echo else "" for i in range(len(results))]
    texts = [e + r.text for e, r in zip(echoed, results, strict=True)]
    return Completion(
        id=rid,
        created=created,
        model=variant.model,
        choices=[
            CompletionChoice(
                index=i,
                text=texts[i],
                finish_reason=service.finish_reason(r.finish_reason),
                logprobs=(
                    completion_logprobs(
                        engine.tokenizer, r.logprobs, len(echoed[i]), bool(req.logprobs)
                    )
                    if r.logprobs is not None
                    else None
                ),
            )
            for i, r in enumerate(results)
        ],
        usage=service.usage_of(results, prompt_tokens),
        examples_used=examples_used,
    )
