"""Structured outputs at serving time: the constraint a request runs under (label scores
for a `choice` constraint: labels.py)."""

from app.engine.engine import Engine
from app.engine.structured import OutputConstraint
from app.routing.resolve import Variant


def effective_constraint(
    engine: Engine, variant: Variant, requested: OutputConstraint | None
) -> OutputConstraint | None:
    """The request's own constraint, else its template's default; compiled (cached) and
    checked here, before anything is queued. Runs in the threadpool: compiling a new schema
    takes milliseconds."""
    constraint = requested
    if constraint is None and variant.template is not None:
        constraint = variant.template.output_constraint
    if constraint is not None:
        engine.check_constraint(constraint)
    return constraint
