"""An evaluation's state changes on the worker's side (claim, events, heartbeat, finish), each
in its own short transaction. Creating, reading and reaping are in service.py."""

from dataclasses import dataclass
from typing import Any

from sqlalchemy import update

from app.db import get_sessionmaker, utcnow
from app.evals.models import EvalEvent, Evaluation
from app.status import TERMINAL, Status


@dataclass(frozen=True)
class EvalRun:
    """What the worker needs of the row, read once when it claims it."""

    tenant: str
    file_id: str
    variants: list[str]
    metric: str
    generation: dict[str, Any]
    limit: int | None


def claim(eval_id: str) -> EvalRun | None:
    """Marks the row running; None when there is nothing to do (gone, or finished already).
    A redelivered evaluation that was running starts over: the report is written only at
    the end."""
    with get_sessionmaker()() as session:
        row = session.get(Evaluation, eval_id)
        if row is None or row.status in TERMINAL:
            return None
        row.status = Status.RUNNING
        row.heartbeat_at = utcnow()
        session.commit()
        return EvalRun(
            tenant=row.tenant,
            file_id=row.file_id,
            variants=list(row.variants),
            metric=row.metric,
            generation=row.params.get("generation", {}),
            limit=row.params.get("limit"),
        )


def add_event(eval_id: str, message: str, data: dict[str, Any] | None = None) -> None:
    with get_sessionmaker()() as session:
        session.add(EvalEvent(eval_id=eval_id, message=message, data=data))
        row = session.get(Evaluation, eval_id)
        if row is not None:
            row.heartbeat_at = utcnow()
        session.commit()


def heartbeat(eval_id: str) -> None:
    """Touches a running row, so the reaper can tell a long evaluation from a dead worker."""
    with get_sessionmaker()() as session:
        session.execute(
            update(Evaluation)
            .where(Evaluation.id == eval_id, Evaluation.status == Status.RUNNING)
            .values(heartbeat_at=utcnow())
        )
        session.commit()


def succeed(eval_id: str, report: dict[str, Any]) -> None:
    _finish(eval_id, status=Status.SUCCEEDED, report=report)


def fail(eval_id: str, exc: Exception) -> str:
    """Records the failure on the row; returns the message written."""
    message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
    code = getattr(exc, "code", None) or "eval_failed"
    _finish(eval_id, status=Status.FAILED, error={"code": code, "message": message, "param": None})
    return message


def _finish(eval_id: str, **fields: Any) -> None:
    with get_sessionmaker()() as session:
        row = session.get(Evaluation, eval_id)
        if row is None:
            return
        for key, value in fields.items():
            setattr(row, key, value)
        row.finished_at = utcnow()
        session.commit()
