"""An evaluation's state changes on the worker's side (claim, events, heartbeat, finish), each
in its own short transaction, and the reaper's sweep. Creating and reading are in service.py.
Named as app/finetune/lifecycle.py: `add_event` adds to a session, `event` commits one."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

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


def add_event(
    session: Session, eval_id: str, message: str, data: dict[str, Any] | None = None
) -> None:
    session.add(EvalEvent(eval_id=eval_id, message=message, data=data))


def event(eval_id: str, message: str, data: dict[str, Any] | None = None) -> None:
    """One event, in its own transaction; it counts as a heartbeat too."""
    with get_sessionmaker()() as session:
        add_event(session, eval_id, message, data)
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
    with get_sessionmaker()() as session:
        row = session.get(Evaluation, eval_id)
        if row is None:
            return
        row.status, row.report, row.finished_at = Status.SUCCEEDED, report, utcnow()
        session.commit()


def fail(eval_id: str, exc: Exception) -> str:
    """Records the failure on the row; returns the message written."""
    message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
    code = getattr(exc, "code", None) or "eval_failed"
    with get_sessionmaker()() as session:
        row = session.get(Evaluation, eval_id)
        if row is not None:
            _fail(row, code, message, utcnow())
            session.commit()
    return message


def _fail(row: Evaluation, code: str, message: str, now: datetime) -> None:
    """The one way an evaluation fails: the worker's error or the reaper's lost worker."""
    row.status, row.finished_at = Status.FAILED, now
    row.error = {"code": code, "message": message, "param": None}


def reap(heartbeat_timeout_s: float, resend_after_s: float) -> list[str]:
    """Fails evaluations whose worker went silent; returns queued ones the broker seems to
    have lost, to be sent again."""
    now = utcnow()
    with get_sessionmaker()() as session:
        lost = session.scalars(
            select(Evaluation).where(
                Evaluation.status == Status.RUNNING,
                Evaluation.heartbeat_at < now - timedelta(seconds=heartbeat_timeout_s),
            )
        ).all()
        for row in lost:
            message = f"The worker stopped reporting for over {heartbeat_timeout_s:g} s."
            _fail(row, "worker_lost", message, now)
            add_event(session, row.id, "Evaluation failed: worker lost")
        waiting = session.scalars(
            select(Evaluation).where(
                Evaluation.status == Status.QUEUED,
                func.coalesce(Evaluation.heartbeat_at, Evaluation.created_at)
                < now - timedelta(seconds=resend_after_s),
            )
        ).all()
        for row in waiting:
            row.heartbeat_at = now  # the resend clock starts again
        session.commit()
        return [row.id for row in waiting]
