"""Fine-tuning jobs as the API sees them: create (commit, then send), list, cancel, events.

Transitions shared with the worker live in app/finetune/lifecycle.py.
"""

import secrets
from collections.abc import Callable
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from app.broker import FINE_TUNE_TASK, enqueue
from app.db import unix_time, utcnow
from app.engine.lora_targets import unusable_targets
from app.errors import APIError, BadRequest, Conflict, NotFound
from app.files import service as files
from app.files.models import File
from app.finetune import memory, parents
from app.finetune.lifecycle import add_event
from app.finetune.models import FineTuningJob, JobCheckpoint, JobEvent
from app.finetune.repository import JobRepository
from app.finetune.schemas import (
    CheckpointRead,
    EventRead,
    JobCreate,
    JobError,
    JobHyperparameters,
    JobRead,
)
from app.ids import new_id
from app.protocol.values import db_int
from app.status import ACTIVE, TERMINAL, Status


class QuotaExceeded(APIError):
    status_code = 429
    type = "rate_limit_error"
    code = "quota_exceeded"


def _training_file(session: Session, tenant: str, file_id: str, param: str, method: str) -> File:
    row = files.get_file(session, tenant, file_id, param=param)
    if row.purpose != "fine-tune":
        raise BadRequest(
            f"File '{file_id}' was uploaded with purpose '{row.purpose}', not 'fine-tune'.",
            param=param,
            code="invalid_file_purpose",
        )
    if (row.format == "preference") != (method == "dpo"):
        wanted = (
            "preference pairs (input, preferred_output, non_preferred_output)"
            if method == "dpo"
            else "training examples (messages, prompt/completion or CSV), not preference pairs"
        )
        raise BadRequest(
            f"File '{file_id}' holds {row.format} data; a {method} job needs {wanted}.",
            param=param,
            code="invalid_file_format",
        )
    return row


def create(
    session: Session,
    tenant: str,
    body: JobCreate,
    *,
    base_name: str,
    max_active: int,
    module_names: set[str] | None,
    microbatch_tokens: int,
) -> FineTuningJob:
    hyperparameters = body.merged_hyperparameters()
    if parents.is_adapter_name(body.model):
        parents.parent_adapter(
            session,
            tenant,
            body.model,
            base_name=base_name,
            hyperparameters=body.explicit_lora_settings(),
        )
    elif body.model != base_name:
        raise BadRequest(
            f"Model '{body.model}' cannot be fine-tuned here; use '{base_name}'.",
            param="model",
            code="model_not_available",
        )
    method = body.method_type()
    train_file = _training_file(session, tenant, body.training_file, "training_file", method)
    # Validation runs without gradients, a small fraction of a training forward's memory.
    memory.check_fits(train_file, method, microbatch_tokens, param="training_file")
    if body.validation_file:
        _training_file(session, tenant, body.validation_file, "validation_file", method)
    problem = (
        unusable_targets(hyperparameters.get("target_modules", []), module_names)
        if module_names is not None
        else None
    )
    if problem:
        raise BadRequest(
            problem,
            param="method.supervised.hyperparameters.target_modules",
            code="invalid_hyperparameters",
        )
    jobs = JobRepository(session, tenant)
    jobs.lock_creations()  # held until the commit below: the count and the insert are one
    active = jobs.active_count()
    if active >= max_active:
        session.rollback()  # lets the tenant's next creation go on now
        raise QuotaExceeded(
            f"This tenant already has {active} active fine-tuning jobs (limit {max_active}); "
            "wait for one to finish or cancel one."
        )
    row = FineTuningJob(
        id=new_id("ftjob-"),
        tenant=tenant,
        model=body.model,
        training_file=body.training_file,
        validation_file=body.validation_file,
        suffix=body.suffix,
        seed=body.seed if body.seed is not None else secrets.randbelow(2**31),
        hyperparameters=hyperparameters,
        method=method,
        status=Status.VALIDATING_FILES,
    )
    session.add(row)
    session.flush()
    add_event(session, row.id, f"Created fine-tuning job: {row.id}")
    add_event(session, row.id, f"Validating training file: {row.training_file}")
    session.commit()
    # The files were validated on upload; here they only need to be present still.
    row.status = Status.QUEUED
    row.heartbeat_at = utcnow()  # for a queued job: when it was sent to the broker
    add_event(session, row.id, "Files validated, moving job to queued state")
    session.commit()
    enqueue(FINE_TUNE_TASK, row.id)  # after the commit: a worker must find the row
    return row


def get(session: Session, tenant: str, job_id: str) -> FineTuningJob:
    row = JobRepository(session, tenant).get(job_id)
    if row is None:
        raise NotFound(
            f"No such fine-tuning job: '{job_id}'.", param="fine_tuning_job_id", code="not_found"
        )
    return row


def list_page(
    session: Session, tenant: str, *, after: str | None, limit: int
) -> tuple[list[FineTuningJob], bool]:
    cursor = get(session, tenant, after) if after else None
    return JobRepository(session, tenant).list_page(
        keys=(FineTuningJob.created_at, FineTuningJob.id),
        after=(cursor.created_at, cursor.id) if cursor is not None else None,
        limit=limit,
    )


def cancel(session: Session, tenant: str, job_id: str) -> FineTuningJob:
    row = get(session, tenant, job_id)
    was = row.status
    done = session.execute(
        update(FineTuningJob)
        .where(FineTuningJob.id == job_id, FineTuningJob.status.in_(ACTIVE))
        .values(status=Status.CANCELLED, cancel_requested=True, finished_at=utcnow())
    )
    if done.rowcount == 1:
        add_event(
            session,
            job_id,
            "Job cancelled"
            + ("; the worker stops training within a step" if was == Status.RUNNING else ""),
        )
        session.commit()
    else:
        session.rollback()
    session.refresh(row)
    if row.status in TERMINAL and row.status != Status.CANCELLED:
        raise Conflict(
            f"Job '{job_id}' has already {row.status}; only an unfinished job can be cancelled.",
            param="fine_tuning_job_id",
            code="job_not_cancellable",
        )
    return row


def list_events(
    session: Session, tenant: str, job_id: str, *, after: str | None, limit: int
) -> tuple[list[JobEvent], bool]:
    job = get(session, tenant, job_id)
    after_id = None
    if after:
        after_id = db_int(after.removeprefix("ftevent-"))
        if after_id is None:
            raise BadRequest(
                f"Invalid event cursor '{after}'.", param="after", code="invalid_cursor"
            )
    return JobRepository(session, tenant).events_page(job, after_id, limit)


def list_checkpoints(
    session: Session, tenant: str, job_id: str, *, after: str | None, limit: int
) -> tuple[list[JobCheckpoint], bool]:
    job = get(session, tenant, job_id)
    return JobRepository(session, tenant).checkpoints_page(job, after, limit)


def using_model(session: Session, tenant: str, matches: Callable[[str], bool]) -> list[str]:
    return JobRepository(session, tenant).on_model(matches)


def using_file(session: Session, tenant: str, file_id: str) -> list[str]:
    return JobRepository(session, tenant).using_file(file_id)


def _public_hp(hp: dict[str, Any]) -> JobHyperparameters:
    return JobHyperparameters(
        n_epochs=hp.get("n_epochs", "auto"),
        batch_size=hp.get("batch_size", "auto"),
        learning_rate_multiplier=hp.get("learning_rate_multiplier", "auto"),
        learning_rate=hp.get("learning_rate"),
        auto_reason=hp.get("auto_reason"),
    )


def to_read(row: FineTuningJob) -> JobRead:
    hp = dict(row.hyperparameters or {})
    return JobRead(
        id=row.id,
        created_at=unix_time(row.created_at) or 0,
        error=JobError(**row.error) if row.error else None,
        fine_tuned_model=row.fine_tuned_model,
        finished_at=unix_time(row.finished_at),
        hyperparameters=_public_hp(hp),
        method={"type": row.method, row.method: {"hyperparameters": hp}},
        model=row.model,
        organization_id=row.tenant,
        seed=row.seed,
        status=row.status,
        trained_tokens=row.trained_tokens,
        training_file=row.training_file,
        validation_file=row.validation_file,
        suffix=row.suffix,
        attempts=row.attempts,
    )


def event_to_read(row: JobEvent) -> EventRead:
    return EventRead(
        id=f"ftevent-{row.id}",
        created_at=unix_time(row.created_at) or 0,
        level=row.level,
        message=row.message,
        type=row.type,
        data=row.data,
    )


def checkpoint_to_read(row: JobCheckpoint) -> CheckpointRead:
    return CheckpointRead(
        id=row.id,
        created_at=unix_time(row.created_at) or 0,
        fine_tuned_model_checkpoint=row.fine_tuned_model_checkpoint,
        fine_tuning_job_id=row.job_id,
        metrics=row.metrics or {},
        step_number=row.step,
    )
