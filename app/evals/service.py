"""Evaluations: create (validate, store, enqueue after commit), run on the worker, read."""

import asyncio
import logging
import threading
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.db import get_sessionmaker, unix_time, utcnow
from app.engine.engine import Engine
from app.errors import BadRequest, ModelNotFound, NotFound
from app.evals.dataset import load_labeled_examples
from app.evals.models import EvalEvent, Evaluation
from app.evals.report import build_report
from app.evals.repository import EvaluationRepository
from app.evals.runner import GenerationSettings, LabeledExample, run_variant
from app.evals.schemas import EvalCreate, EvalEventRead, EvalGeneration, EvalRead
from app.files import service as files
from app.ids import new_id
from app.routing.resolve import Variant, resolve
from app.status import TERMINAL, Status

log = logging.getLogger(__name__)


def create(session: Session, tenant: str, base_name: str, body: EvalCreate) -> Evaluation:
    file = files.get_file(session, tenant, body.file_id, param="file_id")
    for i, model in enumerate(body.variants):
        try:
            resolve(session, tenant, model, base_name, count_alias=False)
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


def _event(eval_id: str, message: str, data: dict[str, Any] | None = None) -> None:
    with get_sessionmaker()() as session:
        session.add(EvalEvent(eval_id=eval_id, message=message, data=data))
        row = session.get(Evaluation, eval_id)
        if row is not None:
            row.heartbeat_at = utcnow()
        session.commit()


def _finish(eval_id: str, **fields: Any) -> None:
    with get_sessionmaker()() as session:
        row = session.get(Evaluation, eval_id)
        if row is None:
            return
        for key, value in fields.items():
            setattr(row, key, value)
        row.finished_at = utcnow()
        session.commit()


class _Heartbeat:
    """Touches the row every few seconds while the worker is busy with it, so the reaper can
    tell a long evaluation from a dead worker."""

    def __init__(self, eval_id: str, every_s: float = 5.0) -> None:
        self.eval_id, self.every_s = eval_id, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="eval-heartbeat", daemon=True)

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                with get_sessionmaker()() as session:
                    session.execute(
                        update(Evaluation)
                        .where(Evaluation.id == self.eval_id, Evaluation.status == Status.RUNNING)
                        .values(heartbeat_at=utcnow())
                    )
                    session.commit()
            except Exception:  # noqa: BLE001 - a missed beat is retried next time
                log.warning("evaluation heartbeat failed", exc_info=True)


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


def run(eval_id: str, engine: Engine) -> None:
    """The worker's side. Idempotent: a finished evaluation is left alone; a redelivered
    one that was running starts over (its report is written only at the end)."""
    with get_sessionmaker()() as session:
        row = session.get(Evaluation, eval_id)
        if row is None or row.status in TERMINAL:
            return
        row.status = Status.RUNNING
        row.heartbeat_at = utcnow()
        session.commit()
        tenant, names, metric = row.tenant, list(row.variants), row.metric
        gen = GenerationSettings(**row.params.get("generation", {}))
        limit = row.params.get("limit")
        try:
            examples = load_labeled_examples(session, tenant, row.file_id)
            resolved = [resolve(session, tenant, m, engine.name, count_alias=False) for m in names]
        except Exception as exc:  # noqa: BLE001 - reported on the row, not raised
            _fail(eval_id, exc)
            return
    if limit:
        examples = examples[:limit]
    _event(eval_id, f"Evaluating {len(examples)} examples on {len(names)} variants")
    with _Heartbeat(eval_id):
        _run_variants(eval_id, engine, names, resolved, examples, metric, gen)


def _run_variants(
    eval_id: str,
    engine: Engine,
    names: list[str],
    resolved: list[Variant],
    examples: list[LabeledExample],
    metric: str,
    gen: GenerationSettings,
) -> None:
    try:
        outcomes = {}
        for i, (name, variant) in enumerate(zip(names, resolved, strict=True)):
            outcomes[name] = asyncio.run(run_variant(engine, variant, examples, metric, gen))
            correct = sum(o.correct for o in outcomes[name])
            _event(
                eval_id,
                f"Variant {i + 1}/{len(names)} done: {name}",
                {"variant": name, "correct": correct, "n": len(examples)},
            )
        report = build_report(
            names, [{"input": ex.input, "expected": ex.expected} for ex in examples], outcomes
        )
    except Exception as exc:  # noqa: BLE001
        log.exception("evaluation %s failed", eval_id)
        _fail(eval_id, exc)
        return
    _finish(eval_id, status=Status.SUCCEEDED, report=report)
    _event(eval_id, "Evaluation succeeded", {"recommendation": report["recommendation"]["variant"]})


def _fail(eval_id: str, exc: Exception) -> None:
    message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
    code = getattr(exc, "code", None) or "eval_failed"
    _finish(eval_id, status=Status.FAILED, error={"code": code, "message": message, "param": None})
    _event(eval_id, f"Evaluation failed: {message}")
