"""Structured outputs at serving time: the constraint a request runs under, and the
log-probability of each label of a `choice` constraint (the adaptd `label_logprobs` field)."""

import asyncio
import threading

from app.engine.engine import Engine
from app.engine.requests import RequestHandle
from app.engine.sampling import SamplingParams
from app.engine.structured import OutputConstraint
from app.errors import ContextLengthExceeded
from app.protocol.common import GenerationRequest
from app.routing.resolve import Variant


def effective_constraint(
    engine: Engine,
    variant: Variant,
    req: GenerationRequest,
    stop: threading.Event | None = None,
) -> OutputConstraint | None:
    """The request's own constraint, else its template's default unless the request asks
    for text (`response_format: {"type": "text"}`); compiled (cached) and checked here, before
    anything is queued. Runs in the threadpool: a new schema compiles in a child process, up
    to GRAMMAR_COMPILE_TIMEOUT_S, stopped early when `stop` is set."""
    constraint = req.output_constraint()
    if constraint is None and variant.template is not None and not req.asks_for_text():
        constraint = variant.template.output_constraint
    if constraint is not None:
        engine.check_constraint(constraint, stop)
    return constraint


def submit_label_scores(
    engine: Engine,
    variant: Variant,
    prompt_ids: list[int],
    constraint: OutputConstraint,
    prefix_len: int = 0,
) -> list[tuple[str, RequestHandle]]:
    """One forced row per label, through the same batch as the answers: each generates the
    label's tokens exactly and hands back their log-probabilities under `prompt_ids`."""
    jobs: list[tuple[str, list[int]]] = []
    for label in constraint.choices:
        tokens = engine.tokenizer.encode(label, add_special_tokens=False)
        if len(prompt_ids) + len(tokens) > engine.context_window:
            raise ContextLengthExceeded(
                f"The label {label!r} does not fit in the context window after the prompt.",
                param=constraint.param,
            )
        jobs.append((label, tokens))
    handles: list[tuple[str, RequestHandle]] = []
    try:
        for label, tokens in jobs:
            params = SamplingParams(max_tokens=len(tokens), temperature=0.0, logprobs=0)
            handle = engine.submit(
                prompt_ids, params, variant.adapter, prefix_len=prefix_len, forced_tokens=tokens
            )
            handles.append((label, handle))
    except Exception:
        for _, h in handles:
            h.cancel()
        raise
    return handles


async def _scores(handles: list[tuple[str, RequestHandle]]) -> dict[str, float]:
    results = await asyncio.gather(*(h.result() for _, h in handles))
    return {
        label: sum(entry.logprob for entry in result.logprobs or ())
        for (label, _), result in zip(handles, results, strict=True)
    }


async def label_logprobs(
    engine: Engine,
    variant: Variant,
    constraint: OutputConstraint | None,
    logprobs: int | None,
    prompts: list[tuple[list[int], int]],
    answers: list[RequestHandle],
) -> list[dict[str, float]] | None:
    """Per prompt (token ids, prefix length): each label's total log-probability (summed
    over its tokens), when the request has a `choice` constraint and asks for logprobs;
    else None. The answers already queued are cancelled if this fails or is cancelled."""
    if constraint is None or constraint.kind != "choice" or logprobs is None:
        return None
    try:
        scoring = [
            submit_label_scores(engine, variant, ids, constraint, prefix_len)
            for ids, prefix_len in prompts
        ]
        return [await _scores(handles) for handles in scoring]
    except BaseException:
        for handle in answers:
            handle.cancel()
        raise
