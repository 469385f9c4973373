"""Evaluations as the API sees them: create (validate, store; the router sends the task after
the commit), read, events, and the reaper's sweep. The worker runs them (workers/eval_runner.py)
through the transitions in lifecycle.py."""

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db import get_sessionmaker, unix_time, utcnow
from app.errors import BadRequest, ModelNotFound, NotFound
from app.evals.models import EvalEvent, Evaluation
from app.evals.repository import EvaluationRepository
from app.evals.schemas import EvalCreate, EvalEventRead, EvalGeneration, EvalRead
from app.files import service as files
from app.ids import new_id
from app.model_refs import VariantCheck
from app.status import Status


def create(
    session: Session, tenant: str, body: EvalCreate, check_variant: VariantCheck
) -> Evaluation:
    file = files.get_file(session, tenant, body.file_id, param="file_id")
    for i, model in enumerate(body.variants):
        try:
            check_variant(model)
        except ModelNotFound:
            raise BadRequest(
                f"Variant '{model}' does not exist or you do not have access to it.",
                param=f"variants.{i}",
                code="model_not_found",
            ) from None
    row = Evaluation(
        id=new_id("eval_"),
        tenant=tenant,
        file_id=file.id,
        variants=body.variants,
        metric=body.metric,
        params={"generation": body.generation.model_dump(), "limit": body.limit},
        status=Status.QUEUED,
    )
    session.add(row)
    session.flush()  # the event's foreign key needs the row first
    session.add(EvalEvent(eval_id=row.id, message="Evaluation created"))
    session.commit()
    return row


def evals_using_model(session: Session, tenant: str, matches: Callable[[str], bool]) -> list[str]:
    return EvaluationRepository(session, tenant).using_model(matches)


def evals_using_file(session: Session, tenant: str, file_id: str) -> list[str]:
    return EvaluationRepository(session, tenant).using_file(file_id)


def get(session: Session, tenant: str, eval_id: str) -> Evaluation:
    row = EvaluationRepository(session, tenant).get(eval_id)
    if row is None:
        raise NotFound(
            f"No evaluation with id '{eval_id}'.", param="eval_id", code="eval_not_found"
        )
    return row


def list_page(
    session: Session, tenant: str, after: str | None, limit: int
) -> tuple[list[Evaluation], bool]:
    """Newest first; `after` is the id of the last evaluation of the previous page."""
    cursor = get(session, tenant, after) if after is not None else None
    return EvaluationRepository(session, tenant).list_page(
        keys=(Evaluation.created_at, Evaluation.id),
        after=(cursor.created_at, cursor.id) if cursor is not None else None,
        limit=limit,
    )


def read(row: Evaluation) -> EvalRead:
    return EvalRead(
        id=row.id,
        status=row.status,
        file_id=row.file_id,
        variants=row.variants,
        metric=row.metric,
        generation=EvalGeneration(**row.params.get("generation", {})),
        limit=row.params.get("limit"),
        created_at=unix_time(row.created_at) or 0,
        finished_at=unix_time(row.finished_at),
        error=row.error,
        report=row.report,
    )


def events(session: Session, tenant: str, eval_id: str) -> list[EvalEventRead]:
    get(session, tenant, eval_id)
    rows = session.scalars(
        select(EvalEvent).where(EvalEvent.eval_id == eval_id).order_by(EvalEvent.id)
    )
    return [
        EvalEventRead(
            id=r.id, created_at=unix_time(r.created_at) or 0, message=r.message, data=r.data
        )
        for r in rows
    ]


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
            row.status, row.finished_at = Status.FAILED, now
            row.error = {
                "code": "worker_lost",
                "message": f"The worker stopped reporting for over {heartbeat_timeout_s:g} s.",
                "param": None,
            }
            session.add(EvalEvent(eval_id=row.id, message="Evaluation failed: worker lost"))
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
