"""Chat completions on the engine: the request, its resolved variant and its prepared prompt
in; the OpenAI response, or the server-sent-event lines of its stream, out."""

from collections.abc import AsyncIterator

from app.engine.protocol import InferenceEngine
from app.engine.requests import RequestHandle, TokenLogprob
from app.inference import service
from app.inference.labels import LabelPlan, plan_labels, submit_with_labels
from app.inference.logprobs import chat_logprobs
from app.inference.prompting import PreparedPrompt, check_request_size, max_tokens_for
from app.inference.rows import RequestRows
from app.protocol.chat import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChatResponseMessage,
)
from app.protocol.common import Usage
from app.routing.resolve import Variant


async def create_chat_completion(
    engine: InferenceEngine, variant: Variant, req: ChatCompletionRequest, prepared: PreparedPrompt
) -> ChatCompletion | AsyncIterator[str]:
    """Submits the n choices at once, and the first of the label rows, so a full queue refuses
    before any response starts; then the whole response, or for `stream` the SSE lines.
    Every row it submits is cancelled when it ends (`RequestRows`)."""
    max_tokens = max_tokens_for(engine, req, len(prepared.token_ids), prepared.defaults)
    params = req.to_sampling_params(
        prepared.defaults, max_tokens=max_tokens, constraint=prepared.constraint
    )
    plan = plan_labels(
        engine, prepared.constraint, params.logprobs, [(prepared.token_ids, prepared.prefix_len)]
    )
    check_request_size([(len(prepared.token_ids), max_tokens)] * req.n, plan)
    rows = RequestRows(engine, variant)
    try:
        jobs = [(prepared.token_ids, service.seeded(params, i)) for i in range(req.n)]
        handles, scored = await submit_with_labels(rows, jobs, plan, prepared.prefix_len)
        labels = scored[0] if scored else None
        rid, created = service.response_id("chatcmpl-")
        prompt_tokens = len(prepared.token_ids)
        if req.stream:
            return rows.stream(
                _stream(engine, variant, req, handles, rid, created, prompt_tokens, labels, plan)
            )
        results = await service.collect(handles)
    finally:
        rows.release()
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
                label_logprobs=labels,
            )
            for i, r in enumerate(results)
        ],
        usage=service.usage_of(results, prompt_tokens, plan),
        examples_used=prepared.examples_used,
    )


async def _stream(
    engine: InferenceEngine,
    variant: Variant,
    req: ChatCompletionRequest,
    handles: list[RequestHandle],
    rid: str,
    created: int,
    prompt_tokens: int,
    labels: dict[str, float] | None,
    plan: LabelPlan | None,
) -> AsyncIterator[str]:
    def chunk(
        index: int, text: str | None, finish: str | None, logprobs: tuple[TokenLogprob, ...]
    ) -> ChatCompletionChunk:
        delta = ChatDelta(content=text) if text is not None else ChatDelta()
        choice = ChatChunkChoice(index=index, delta=delta, finish_reason=finish)
        if finish is not None:
            choice.label_logprobs = labels
        if logprobs:
            choice.logprobs = chat_logprobs(engine.tokenizer, logprobs)
        return ChatCompletionChunk(id=rid, created=created, model=variant.model, choices=[choice])

    def usage_chunk(usage: Usage) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=rid, created=created, model=variant.model, choices=[], usage=usage
        )

    # The role comes first, once per choice, as OpenAI sends it.
    for i in range(req.n):
        first = ChatCompletionChunk(
            id=rid,
            created=created,
            model=variant.model,
            choices=[ChatChunkChoice(index=i, delta=ChatDelta(role="assistant", content=""))],
        )
        yield service.sse(first)
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    async for line in service.stream_sse(
        handles, chunk, usage_chunk if include_usage else None, prompt_tokens, plan
    ):
        yield line
