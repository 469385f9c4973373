"""Runs a prepared request on the engine and shapes the OpenAI response or SSE stream."""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from pydantic import BaseModel

from app.engine.requests import Delta, Failed, Finished, RequestHandle, TokenLogprob
from app.engine.sampling import SamplingParams
from app.errors import engine_api_error
from app.ids import new_id
from app.inference.labels import LabelPlan
from app.observability.context import note_first_token, note_usage
from app.protocol.common import Usage


def finish_reason(reason: str) -> str:
    return "stop" if reason in ("stop", "cancelled") else "length"


def seeded(params: SamplingParams, index: int) -> SamplingParams:
    # Each of n choices gets its own seed, so n > 1 gives different samples, reproducibly.
    return (
        params if params.seed is None or index == 0 else replace(params, seed=params.seed + index)
    )


async def collect(handles: list[RequestHandle]) -> list[Finished]:
    try:
        return list(await asyncio.gather(*(h.result() for h in handles)))
    finally:
        for h in handles:
            h.cancel()
            note_first_token(h.first_token_at)


def usage_of(results: list[Finished], prompt_tokens: int, labels: LabelPlan | None = None) -> Usage:
    """The answers' tokens, plus the label rows' (each its prompt and its label's tokens):
    everything the request ran through the engine."""
    completion = sum(r.completion_tokens for r in results)
    if labels is not None:
        prompt_tokens += labels.prompt_tokens
        completion += labels.label_tokens
    note_usage(prompt_tokens, completion)  # for the request's log line and metrics
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion,
        total_tokens=prompt_tokens + completion,
    )


def response_id(prefix: str) -> tuple[str, int]:
    return new_id(prefix), int(time.time())


def sse(payload: BaseModel | dict) -> str:
    body = (
        payload.model_dump_json(exclude_none=False)
        if isinstance(payload, BaseModel)
        else json.dumps(payload)
    )
    return f"data: {body}\n\n"


async def merged_events(
    handles: list[RequestHandle],
) -> AsyncIterator[tuple[int, Delta | Finished | Failed]]:
    """Events of several choices as they come, tagged with the choice index."""
    queue: asyncio.Queue[tuple[int, Delta | Finished | Failed] | None] = asyncio.Queue()

    async def pump(index: int, handle: RequestHandle) -> None:
        async for event in handle.events():
            await queue.put((index, event))

    tasks = [asyncio.create_task(pump(i, h)) for i, h in enumerate(handles)]
    remaining = len(handles)
    try:
        while remaining:
            item = await queue.get()
            assert item is not None
            if isinstance(item[1], Finished | Failed):
                remaining -= 1
            yield item
    finally:
        for t in tasks:
            t.cancel()
        for h in handles:
            h.cancel()  # the client disconnected or the stream ended: free the engine rows


async def stream_sse(
    handles: list[RequestHandle],
    make_chunk: Callable[[int, str | None, str | None, tuple[TokenLogprob, ...]], BaseModel],
    make_usage_chunk: Callable[[Usage], BaseModel] | None,
    prompt_tokens: int,
    labels: LabelPlan | None = None,
) -> AsyncIterator[str]:
    results: list[Finished] = []
    async for index, event in merged_events(handles):
        if isinstance(event, Delta):
            yield sse(make_chunk(index, event.text, None, event.logprobs))
        elif isinstance(event, Finished):
            results.append(event)
            yield sse(make_chunk(index, None, finish_reason(event.finish_reason), ()))
        else:
            yield sse(engine_api_error(event.error).body())
            break
    for h in handles:
        note_first_token(h.first_token_at)
    usage = usage_of(results, prompt_tokens, labels)
    if make_usage_chunk is not None and len(results) == len(handles):
        yield sse(make_usage_chunk(usage))
    yield "data: [DONE]\n\n"
