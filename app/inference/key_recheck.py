"""End a stream whose API key stops being good while it runs.

A request's key is checked once, when the request arrives; a stream can then run for
minutes. Between chunks, at most every STREAM_KEY_RECHECK_S seconds, the key is looked up
again: once it is revoked, expired or rotated out, the stream sends one error event and
stops, and closing it cancels its engine rows.
"""

import time
from collections.abc import AsyncIterator, Callable

from fastapi.concurrency import run_in_threadpool

from app.auth.service import Principal, recheck
from app.db import get_sessionmaker
from app.errors import AuthenticationError
from app.inference.service import sse


def _still_good(principal: Principal) -> AuthenticationError | None:
    with get_sessionmaker()() as session:
        try:
            recheck(session, principal)
        except AuthenticationError as exc:
            return exc
    return None


async def while_key_is_good(
    stream: AsyncIterator[str],
    principal: Principal,
    interval_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[str]:
    checked = clock()
    try:
        async for chunk in stream:
            if clock() - checked >= interval_s:
                refusal = await run_in_threadpool(_still_good, principal)
                checked = clock()
                if refusal is not None:
                    yield sse(refusal.body())
                    return
            yield chunk
    finally:
        await stream.aclose()  # type: ignore[attr-defined] - an async generator
