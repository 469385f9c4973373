"""Evaluations as the API sees them: create (validate, store; the router sends the task after
the commit), get, list_page, read, events. The worker runs them (workers/eval_runner.py)
through the transitions in lifecycle.py, where the reaper's sweep is too (as for fine-tuning
jobs)."""

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import unix_time
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


def using_model(session: Session, tenant: str, matches: Callable[[str], bool]) -> list[str]:
    return EvaluationRepository(session, tenant).using_model(matches)


def using_file(session: Session, tenant: str, file_id: str) -> list[str]:
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
