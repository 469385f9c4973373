"""The request being served, as seen by code far from the HTTP layer.

The middleware puts a RequestRecord in a context variable before calling the app; code
below (the inference service, the Celery publish hook) reads it or notes what it learned
(variant, tokens, first token). Context variables follow the request into the threadpool
and into a streaming body, and are absent (None) in workers and background threads.
"""

import time
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class RequestRecord:
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    variant: str | None = None  # the concrete variant that served it
    variant_kind: str | None = None  # base | template | adapter
    alias: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    first_token: float | None = None  # perf_counter time of the first generated text
    actor_key_id: str | None = None  # the API key that made the request (for the audit)


current_record: ContextVar[RequestRecord | None] = ContextVar("adaptd_request", default=None)
# In Celery workers: the id of the request that sent the running task.
current_request_id: ContextVar[str | None] = ContextVar("adaptd_request_id", default=None)


def request_id() -> str | None:
    record = current_record.get()
    return record.request_id if record is not None else current_request_id.get()


def note_variant(model: str, kind: str, alias: str | None = None) -> None:
    record = current_record.get()
    if record is not None:
        record.variant, record.variant_kind, record.alias = model, kind, alias


def note_usage(prompt_tokens: int, completion_tokens: int) -> None:
    record = current_record.get()
    if record is not None:
        record.prompt_tokens, record.completion_tokens = prompt_tokens, completion_tokens


def note_first_token(at: float | None) -> None:
    record = current_record.get()
    if record is None or at is None:
        return
    if record.first_token is None or at < record.first_token:
        record.first_token = at


def note_actor(key_id: str) -> None:
    record = current_record.get()
    if record is not None:
        record.actor_key_id = key_id
