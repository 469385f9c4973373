"""Stop a request's engine work when its client goes away before the answer is ready.

A streamed response notices a gone client when a write fails (or Starlette's disconnect
listener fires), and the stream's generator cancels its engine rows. A whole (non-streamed)
answer writes nothing until it is complete, so without this a client that gave up would keep
its rows generating to the end, ahead of everyone queued behind them.

Prompt building runs in the threadpool, where no task can be cancelled:
`run_until_disconnected` gives its template renders a cancel flag that a disconnect sets, and
each render stops at its next budget charge (app/templates/sandbox.py).
"""

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi.concurrency import run_in_threadpool
from starlette.requests import Request

from app.errors import APIError
from app.templates.sandbox import TemplateRefused, cancelled_by

T = TypeVar("T")


class ClientClosedRequest(APIError):
    """Nobody reads this answer (the server drops writes to a closed connection); its 499,
    nginx's code for it, is what the request's log line and metrics show."""

    status_code = 499
    code = "client_closed_request"


async def _until_disconnected(request: Request) -> None:
    # The body was read already, so the server's next message is the disconnect (uvicorn
    # sends it when the socket closes, or once the response is complete).
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def cancel_on_disconnect(
    request: Request, work: Awaitable[T], on_disconnect: Callable[[], None] | None = None
) -> T:
    """Await `work`; if the client disconnects first, call `on_disconnect` and cancel it
    (cancelling the awaiting task cancels the engine handles: RequestHandle.result and
    service.collect see to that)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.create_task(_until_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    gone = watcher.done() and not watcher.cancelled() and watcher.exception() is None
    if task.done() or not gone:
        return await task
    if on_disconnect is not None:
        on_disconnect()
    task.cancel()
    # Whatever the work ends with now (a render stopped by its flag) has nobody to go to.
    with contextlib.suppress(asyncio.CancelledError, APIError, TemplateRefused):
        await task
    raise ClientClosedRequest("The client closed the connection before the answer was ready.")


async def run_until_disconnected(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in the threadpool, its template renders cancelled if the client leaves."""
    flag = threading.Event()

    def call() -> T:
        with cancelled_by(flag):
            return fn(*args)

    return await cancel_on_disconnect(request, run_in_threadpool(call), on_disconnect=flag.set)
