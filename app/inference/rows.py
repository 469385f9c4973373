"""The engine rows one request holds: every row it submits (answers and label scores) goes
through here, so every one of them is cancelled when the request ends, whatever way it ends:
a refusal part-way through submitting, an error, a cancelled task (the client left), or the
end of its stream, including a stream dropped before it was ever read."""

import weakref
from collections.abc import AsyncIterator

from app.engine.protocol import InferenceEngine
from app.engine.requests import RequestHandle
from app.engine.sampling import SamplingParams
from app.observability.context import note_variant
from app.routing.resolve import Variant


class RequestRows:
    def __init__(self, engine: InferenceEngine, variant: Variant) -> None:
        self.engine = engine
        self.variant = variant
        self.handles: list[RequestHandle] = []
        self._streamed = False

    def submit(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        *,
        prefix_len: int = 0,
        forced_tokens: list[int] | None = None,
    ) -> RequestHandle:
        handle = self.engine.submit(
            prompt_ids,
            params,
            self.variant.adapter,
            prefix_len=prefix_len,
            forced_tokens=forced_tokens,
        )
        self.handles.append(handle)
        return handle

    def submit_all(
        self, jobs: list[tuple[list[int], SamplingParams]], prefix_len: int = 0
    ) -> list[RequestHandle]:
        """A request's answer rows. `prefix_len`: leading tokens every job shares with the
        variant's fixed template prefix (the engine reuses their key/value cache). A refusal
        part-way leaves the rows already submitted here, cancelled as the request ends."""
        note_variant(self.variant.model, self.variant.kind, self.variant.alias)
        return [self.submit(ids, params, prefix_len=prefix_len) for ids, params in jobs]

    def cancel(self) -> None:
        """A no-op for rows that have finished; the engine drops the others at its next step."""
        for handle in self.handles:
            handle.cancel()

    def stream(self, lines: AsyncIterator[str]) -> AsyncIterator[str]:
        """Hand the rows over to a response stream: they are cancelled when the stream ends,
        is closed, or is garbage-collected unread (a generator that never started never runs
        its `finally`: a client that left before the first byte)."""
        self._streamed = True
        handles = list(self.handles)
        stream = _cancelling(lines, handles)
        weakref.finalize(stream, _cancel_all, handles)
        return stream

    def release(self) -> None:
        """The request's handler is done with its rows: cancel them, unless a stream now
        owns them."""
        if not self._streamed:
            self.cancel()


def _cancel_all(handles: list[RequestHandle]) -> None:
    # No reference to the stream itself here, or the finalizer would keep it alive.
    for handle in handles:
        handle.cancel()


async def _cancelling(
    lines: AsyncIterator[str], handles: list[RequestHandle]
) -> AsyncIterator[str]:
    try:
        async for line in lines:
            yield line
    finally:
        _cancel_all(handles)
        aclose = getattr(lines, "aclose", None)
        if aclose is not None:
            await aclose()
