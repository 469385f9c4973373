"""Job state transitions, shared by the API, the worker and the reaper.

    validating_files -> queued -> running -> succeeded | failed | cancelled

Every transition is a conditional UPDATE on the row (compare-and-set on status and, for a
running job, on `attempts`, which fences a worker that lost its job to a retry), so the API,
any number of workers and reapers can race without corrupting a job. For a queued job,
`heartbeat_at` records when it was last sent to the broker.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db import get_sessionmaker, utcnow
from app.finetune.models import FineTuningJob, JobCheckpoint, JobEvent
from app.ids import new_id
from app.registry.models import Adapter
from app.status import ACTIVE, TERMINAL, Status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """What a worker needs to run one attempt of a job."""

    job_id: str
    tenant: str
    model: str
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int
    hyperparameters: dict[str, Any]
    attempt: int
    method: str = "supervised"


def add_event(
    session: Session,
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
) -> None:
    session.add(JobEvent(job_id=job_id, level=level, type=type, message=message, data=data))


def event(job_id: str, message: str, **kwargs: Any) -> None:
    with get_sessionmaker()() as session:
        add_event(session, job_id, message, **kwargs)
        session.commit()


def claim(job_id: str, worker: str, heartbeat_timeout_s: float, max_attempts: int) -> Claim | None:
    """Take the job for one attempt, or None when there is nothing to run: it is gone,
    finished, cancelled, or running under another worker that still heartbeats."""
    with get_sessionmaker()() as session:
        row = session.scalar(
            select(FineTuningJob).where(FineTuningJob.id == job_id).with_for_update()
        )
        if row is None or row.status in TERMINAL or row.status == Status.VALIDATING_FILES:
            return None
        now = utcnow()
        if row.status == Status.RUNNING:
            fresh = row.heartbeat_at and now - row.heartbeat_at < timedelta(
                seconds=heartbeat_timeout_s
            )
            if fresh and row.worker != worker:
                return None  # a duplicate delivery: the job is in good hands
            if row.attempts >= max_attempts:
                _fail_row(session, row, "worker_lost", _lost_message(heartbeat_timeout_s))
                session.commit()
                return None
        row.status = Status.RUNNING
        row.attempts += 1
        row.worker = worker
        row.heartbeat_at = now
        row.started_at = row.started_at or now
        row.error = None
        add_event(
            session,
            job_id,
            "Fine-tuning job started"
            + (f" (attempt {row.attempts} of {max_attempts})" if row.attempts > 1 else ""),
        )
        session.commit()
        return Claim(
            job_id=row.id,
            tenant=row.tenant,
            model=row.model,
            training_file=row.training_file,
            validation_file=row.validation_file,
            suffix=row.suffix,
            seed=row.seed,
            hyperparameters=dict(row.hyperparameters or {}),
            attempt=row.attempts,
            method=row.method or "supervised",
        )


def _mine(job_id: str, attempt: int):  # a SQL condition
    return (
        (FineTuningJob.id == job_id)
        & (FineTuningJob.status == Status.RUNNING)
        & (FineTuningJob.attempts == attempt)
    )


def heartbeat(job_id: str, attempt: int) -> bool:
    """Refresh the heartbeat; False once the job is no longer this attempt's to run."""
    with get_sessionmaker()() as session:
        done = session.execute(
            update(FineTuningJob).where(_mine(job_id, attempt)).values(heartbeat_at=utcnow())
        )
        session.commit()
        return done.rowcount == 1


def should_continue(job_id: str, attempt: int) -> bool:
    """Checked between training steps: still running, this attempt, and no cancel asked."""
    with get_sessionmaker()() as session:
        row = session.execute(
            select(
                FineTuningJob.status, FineTuningJob.attempts, FineTuningJob.cancel_requested
            ).where(FineTuningJob.id == job_id)
        ).first()
    return (
        row is not None
        and row.status == Status.RUNNING
        and row.attempts == attempt
        and not row.cancel_requested
    )


def current_status(job_id: str) -> str | None:
    with get_sessionmaker()() as session:
        return session.scalar(select(FineTuningJob.status).where(FineTuningJob.id == job_id))


def set_resolved_hyperparameters(job_id: str, attempt: int, hyperparameters: dict) -> None:
    with get_sessionmaker()() as session:
        session.execute(
            update(FineTuningJob)
            .where(_mine(job_id, attempt))
            .values(hyperparameters=hyperparameters)
        )
        session.commit()


@dataclass(frozen=True)
class AdapterFiles:
    """An adapter complete on disk (the final model or an earlier epoch's), to register as a
    servable model and list as one of the job's checkpoints."""

    name: str  # ft:<base>:<suffix>:<job>, with :ckpt-step-<step> for an earlier epoch
    path: str  # relative to the adapters folder
    bytes: int
    step: int
    metrics: dict[str, Any]
    manifest: dict[str, Any]


def succeed(
    claim: Claim,
    *,
    final: AdapterFiles,
    base_model: str,
    trained_tokens: int,
    earlier: Sequence[AdapterFiles] = (),
    parent: str | None = None,
) -> bool:
    """Register the adapter (and the earlier epochs' checkpoints, each servable by its own
    name) and mark the job succeeded, in one transaction; False (nothing written) when the
    job was cancelled or taken over meanwhile."""
    with get_sessionmaker()() as session:
        now = utcnow()
        done = session.execute(
            update(FineTuningJob)
            .where(_mine(claim.job_id, claim.attempt))
            .values(
                status=Status.SUCCEEDED,
                fine_tuned_model=final.name,
                trained_tokens=trained_tokens,
                finished_at=now,
                heartbeat_at=now,
            )
        )
        if done.rowcount != 1:
            session.rollback()
            return False
        for files in [final, *earlier]:
            session.add(
                Adapter(
                    id=new_id("adapter-"),
                    tenant=claim.tenant,
                    name=files.name,
                    job_id=claim.job_id,
                    base_model=base_model,
                    path=files.path,
                    bytes=files.bytes,
                    manifest=files.manifest,
                    parent=parent,
                )
            )
            session.add(
                JobCheckpoint(
                    id=new_id("ftckpt-"),
                    job_id=claim.job_id,
                    step=files.step,
                    metrics=files.metrics,
                    fine_tuned_model_checkpoint=files.name,
                )
            )
        add_event(session, claim.job_id, f"New fine-tuned model created: {final.name}")
        add_event(session, claim.job_id, "The job has successfully completed")
        session.commit()
        return True


def _lost_message(timeout_s: float) -> str:
    return (
        f"The worker running this job stopped sending heartbeats for more than {timeout_s:g} s "
        "(it crashed or was killed) and no attempts are left."
    )


def _fail_row(
    session: Session, row: FineTuningJob, code: str, message: str, param: str | None = None
) -> None:
    row.status = Status.FAILED
    row.error = {"code": code, "message": message, "param": param}
    row.finished_at = utcnow()
    add_event(session, row.id, f"Job failed: {message}", level="error")


def fail(
    job_id: str, code: str, message: str, *, param: str | None = None, attempt: int | None = None
) -> bool:
    """Mark the job failed unless it already ended (or, with `attempt`, moved on)."""
    with get_sessionmaker()() as session:
        cond = (FineTuningJob.id == job_id) & FineTuningJob.status.in_(ACTIVE)
        if attempt is not None:
            cond = _mine(job_id, attempt)
        done = session.execute(
            update(FineTuningJob)
            .where(cond)
            .values(
                status=Status.FAILED,
                error={"code": code, "message": message, "param": param},
                finished_at=utcnow(),
            )
        )
        if done.rowcount == 1:
            add_event(session, job_id, f"Job failed: {message}", level="error")
        session.commit()
        return done.rowcount == 1


OUT_OF_MEMORY = "out_of_memory"


def out_of_memory_message(killed_by: str | None) -> str:
    """Why a job failed for memory: a MemoryError in training (`killed_by` None), or its
    process killed with a signal (`killed_by`: "SIGKILL"), which is how the kernel's
    out-of-memory killer ends a process."""
    cause = (
        "Training ran out of memory"
        if killed_by is None
        else f"The worker process training this job was killed ({killed_by}), which is how "
        "the kernel's out-of-memory killer ends a process"
    )
    return (
        f"{cause}; the job is not retried, as another attempt would run out the same way. "
        "Use a smaller batch_size or shorter examples, or give the worker more memory "
        "(TRAIN_MICROBATCH_TOKENS bounds what one forward pass holds), and create the job "
        "again."
    )


def running_worker(job_id: str) -> tuple[str, int] | None:
    """The worker name and attempt of a running job (None when it is not running)."""
    with get_sessionmaker()() as session:
        row = session.execute(
            select(FineTuningJob.worker, FineTuningJob.attempts).where(
                FineTuningJob.id == job_id, FineTuningJob.status == Status.RUNNING
            )
        ).first()
    return None if row is None or row.worker is None else (row.worker, row.attempts)


def fail_killed(job_id: str, worker: str, attempt: int, killed_by: str) -> bool:
    """Fail, as out of memory, the attempt that the process `worker` ran until it was
    killed; False when the job moved on meanwhile (cancelled, handed back, re-queued)."""
    message = out_of_memory_message(killed_by)
    with get_sessionmaker()() as session:
        done = session.execute(
            update(FineTuningJob)
            .where(_mine(job_id, attempt), FineTuningJob.worker == worker)
            .values(
                status=Status.FAILED,
                error={"code": OUT_OF_MEMORY, "message": message, "param": None},
                finished_at=utcnow(),
            )
        )
        if done.rowcount == 1:
            add_event(session, job_id, f"Job failed: {message}", level="error")
        session.commit()
        return done.rowcount == 1


def reap(heartbeat_timeout_s: float, resend_after_s: float, max_attempts: int) -> list[str]:
    """Fail or re-queue running jobs whose worker went silent; pick up queued jobs the broker
    seems to have lost. Returns the ids to send to the broker (after this commit)."""
    now = utcnow()
    stale = now - timedelta(seconds=heartbeat_timeout_s)
    resend_before = now - timedelta(seconds=resend_after_s)
    to_send: list[str] = []
    with get_sessionmaker()() as session:
        lost = session.scalars(
            select(FineTuningJob).where(
                FineTuningJob.status == Status.RUNNING, FineTuningJob.heartbeat_at < stale
            )
        ).all()
        for row in lost:
            if row.attempts >= max_attempts:
                values: dict[str, Any] = {
                    "status": Status.FAILED,
                    "finished_at": now,
                    "error": {
                        "code": "worker_lost",
                        "message": _lost_message(heartbeat_timeout_s),
                        "param": None,
                    },
                }
                note = ("error", f"Job failed: {_lost_message(heartbeat_timeout_s)}")
            else:
                values = {"status": Status.QUEUED, "heartbeat_at": now, "worker": None}
                note = (
                    "warn",
                    f"The worker stopped sending heartbeats (over {heartbeat_timeout_s:g} s); "
                    f"job re-queued for attempt {row.attempts + 1} of {max_attempts}",
                )
            done = session.execute(
                update(FineTuningJob)
                .where(_mine(row.id, row.attempts), FineTuningJob.heartbeat_at == row.heartbeat_at)
                .values(**values)
            )
            if done.rowcount == 1:
                add_event(session, row.id, note[1], level=note[0])
                if values["status"] == Status.QUEUED:
                    to_send.append(row.id)
        waiting = session.scalars(
            select(FineTuningJob).where(
                FineTuningJob.status.in_((Status.QUEUED, Status.VALIDATING_FILES)),
                (FineTuningJob.heartbeat_at < resend_before)
                | (
                    FineTuningJob.heartbeat_at.is_(None)
                    & (FineTuningJob.created_at < resend_before)
                ),
            )
        ).all()
        for row in waiting:
            cond = (FineTuningJob.id == row.id) & (FineTuningJob.status == row.status)
            if row.heartbeat_at is not None:
                cond = cond & (FineTuningJob.heartbeat_at == row.heartbeat_at)
            done = session.execute(
                update(FineTuningJob).where(cond).values(status=Status.QUEUED, heartbeat_at=now)
            )
            if done.rowcount == 1:
                add_event(
                    session,
                    row.id,
                    f"No worker took the job within {resend_after_s:g} s; sent to the queue again",
                    level="warn",
                )
                to_send.append(row.id)
        session.commit()
    return to_send
