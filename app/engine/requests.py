"""What a caller holds while the engine generates for it: a thread-safe event stream."""

import asyncio
import threading
import time
from dataclasses import dataclass

from app.engine.errors import EngineError


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log-probability and the most likely alternatives at its step."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token id, logprob), most likely first


@dataclass(frozen=True)
class Delta:
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()  # the tokens this text came from, when asked


@dataclass(frozen=True)
class Finished:
    finish_reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int
    completion_tokens: int
    text: str
    token_ids: tuple[int, ...] = ()  # the generated ids, eos excluded
    # When asked for: one entry per token whose text is in `text` (a stop sequence's
    # tokens excluded), the same entries the deltas carried.
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True)
class Failed:
    error: EngineError


Event = Delta | Finished | Failed


def _deliver(batch: list[tuple["RequestHandle", Event]]) -> None:
    for handle, event in batch:
        handle._queue.put_nowait(event)


class RequestHandle:
    """Filled by the scheduler thread, read by one asyncio consumer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self.cancelled = threading.Event()
        self.first_token_at: float | None = None  # perf_counter time, for the metrics

    def push(self, event: Event) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:  # the caller's event loop is closed: nobody is listening
            self.cancelled.set()

    @staticmethod
    def push_many(events: list[tuple["RequestHandle", Event]]) -> None:
        """Deliver a step's events with one wake-up per event loop, not one per token: a
        wake-up is a system call, and the loop thread competes with the scheduler for the
        interpreter."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[RequestHandle, Event]]] = {}
        for handle, event in events:
            by_loop.setdefault(handle._loop, []).append((handle, event))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, batch)
            except RuntimeError:
                # That loop is closed (its server stopped mid-stream): its rows have no
                # listener, so drop them instead of letting the scheduler thread die.
                for handle, _ in batch:
                    handle.cancelled.set()

    def cancel(self) -> None:
        """The client went away: the scheduler drops the row at its next step."""
        self.cancelled.set()

    async def events(self):  # async generator of Event
        while True:
            event = await self._queue.get()
            # The first token may carry no text yet (held back, or an immediate end).
            if self.first_token_at is None and isinstance(event, Delta | Finished):
                self.first_token_at = time.perf_counter()
            yield event
            if isinstance(event, Finished | Failed):
                return

    async def result(self) -> Finished:
        try:
            async for event in self.events():
                if isinstance(event, Failed):
                    raise event.error
                if isinstance(event, Finished):
                    return event
        finally:
            self.cancel()  # no-op once finished; stops work if the awaiting task is cancelled
        raise RuntimeError("stream ended without a result")
