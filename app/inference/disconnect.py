"""Stop a request's engine work when its client goes away before the answer is ready.

A streamed response notices a gone client when a write fails (or Starlette's disconnect
listener fires), and the stream's generator cancels its engine rows. A whole (non-streamed)
answer writes nothing until it is complete, so without this a client that gave up would keep
its rows generating to the end, ahead of everyone queued behind them.

Prompt building runs in the threadpool, where no task can be cancelled:
`run_until_disconnected` gives it a stop event that a disconnect sets: each template render
stops at its next budget charge (app/templates/sandbox.py), and a grammar compile it waits on
is killed (app/engine/grammar_process.py).
"""

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi.concurrency import run_in_threadpool
from starlette.requests import Request

from app.errors import APIError
from app.templates.sandbox import cancelled_by

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
    request: Request, work: Awaitable[T], stop: threading.Event | None = None
) -> T:
    """Await `work`; if the client disconnects first, cancel it (cancelling the awaiting task
    cancels the engine handles: RequestHandle.result and service.collect see to that).
    `stop` is set first: work in a thread (a template render, a grammar compile) cannot be
    cancelled from here, and the threadpool's await returns only once the thread has; the
    event tells it to quit."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.create_task(_until_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        if stop is not None:
            stop.set()
        task.cancel()
        raise
    finally:
        watcher.cancel()
    gone = watcher.done() and not watcher.cancelled() and watcher.exception() is None
    if task.done() or not gone:
        return await task
    if stop is not None:
        stop.set()
    task.cancel()
    # Nobody reads the outcome now, whatever it is (a stopped render or compile raises its
    # own error).
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise ClientClosedRequest("The client closed the connection before the answer was ready.")


async def run_until_disconnected(request: Request, fn: Callable[..., T], *args: object) -> T:
    """`fn(*args, stop)` in the threadpool; if the client leaves first, `stop` (a
    threading.Event) is set, which stops the thread's template renders (their budget reads it)
    and the grammar compile it waits on, and ClientClosedRequest is raised."""
    stop = threading.Event()

    def call() -> T:
        with cancelled_by(stop):
            return fn(*args, stop)

    return await cancel_on_disconnect(request, run_in_threadpool(call), stop)
