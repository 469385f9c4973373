"""Text completions on the engine: the request, its resolved variant and its prepared
prompts in; the OpenAI response, or the server-sent-event lines of its stream, out."""

from collections.abc import AsyncIterator

from app.engine.protocol import InferenceEngine
from app.engine.requests import RequestHandle, TokenLogprob
from app.inference import service
from app.inference.labels import LabelPlan, plan_labels, submit_with_labels
from app.inference.logprobs import completion_logprobs
from app.inference.prompting import PreparedPrompt, check_request_size, max_tokens_for
from app.inference.rows import RequestRows
from app.protocol.common import Usage
from app.protocol.completions import Completion, CompletionChoice, CompletionRequest
from app.routing.resolve import Variant


async def create_completion(
    engine: InferenceEngine, variant: Variant, req: CompletionRequest, prompts: list[PreparedPrompt]
) -> Completion | AsyncIterator[str]:
    """Submits n choices per prompt at once, and the first of the label rows, so a full queue
    refuses before any response starts; then the whole response, or for `stream` the SSE
    lines. Every row it submits is cancelled when it ends (`RequestRows`)."""
    jobs = []
    for prepared in prompts:
        max_tokens = max_tokens_for(engine, req, len(prepared.token_ids), prepared.defaults)
        params = req.to_sampling_params(
            prepared.defaults, max_tokens=max_tokens, constraint=prepared.constraint
        )
        jobs.extend((prepared.token_ids, service.seeded(params, i)) for i in range(req.n))
    # Label scores, per prompt (choice i answers prompt i // n).
    plan = plan_labels(
        engine,
        prompts[0].constraint,
        req.requested_logprobs(),
        [(p.token_ids, p.prefix_len) for p in prompts],
    )
    check_request_size([(len(ids), params.max_tokens) for ids, params in jobs], plan)
    rows = RequestRows(engine, variant)
    try:
        # A template's prefix is the same for every prompt of the request.
        prefix_len = min(p.prefix_len for p in prompts)
        handles, labels = await submit_with_labels(rows, jobs, plan, prefix_len)
        rid, created = service.response_id("cmpl-")
        prompt_tokens = sum(len(p.token_ids) for p in prompts) * req.n
        if req.stream:
            return rows.stream(
                _stream(engine, variant, req, handles, rid, created, prompt_tokens, labels, plan)
            )
        results = await service.collect(handles)
    finally:
        rows.release()
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
                label_logprobs=labels[i // req.n] if labels else None,
            )
            for i, r in enumerate(results)
        ],
        usage=service.usage_of(results, prompt_tokens, plan),
        examples_used=prompts[0].examples_used,
    )


def _stream(
    engine: InferenceEngine,
    variant: Variant,
    req: CompletionRequest,
    handles: list[RequestHandle],
    rid: str,
    created: int,
    prompt_tokens: int,
    labels: list[dict[str, float]] | None,
    plan: LabelPlan | None,
) -> AsyncIterator[str]:
    streamed = [0] * len(handles)  # characters sent so far per choice: the text offsets

    def chunk(
        index: int, text: str | None, finish: str | None, logprobs: tuple[TokenLogprob, ...]
    ) -> Completion:
        choice = CompletionChoice(index=index, text=text or "", finish_reason=finish)
        if finish is not None and labels:
            choice.label_logprobs = labels[index // req.n]
        if logprobs:
            choice.logprobs = completion_logprobs(
                engine.tokenizer, logprobs, streamed[index], bool(req.logprobs)
            )
        streamed[index] += len(text or "")
        return Completion(id=rid, created=created, model=variant.model, choices=[choice])

    def usage_chunk(usage: Usage) -> Completion:
        return Completion(id=rid, created=created, model=variant.model, choices=[], usage=usage)

    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return service.stream_sse(
        handles, chunk, usage_chunk if include_usage else None, prompt_tokens, plan
    )
