"""Structured outputs at serving time: the constraint a request runs under (label scores
for a `choice` constraint: labels.py)."""

import threading

from app.engine.protocol import InferenceEngine
from app.engine.structured import OutputConstraint
from app.protocol.common import GenerationRequest
from app.routing.resolve import Variant


def effective_constraint(
    engine: InferenceEngine,
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
