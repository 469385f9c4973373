"""A worker told to stop (SIGTERM: Celery's warm shutdown) hands its running fine-tuning jobs
back instead of holding the shutdown for hours or losing them.

The main process marks the jobs its processes run `queued` again (one event each) and sends
them to the broker; the trainer sees at its next step that the job is no longer its own
(`lifecycle.should_continue`), stops without registering anything, and the task returns, so
the warm shutdown ends. The next worker to take the message resumes the job after its last
finished epoch, from the checkpoint the trainer saved there (weights, optimizer state,
schedule: finetune_runner.EpochSaver); only the unfinished epoch is trained again, or the
whole job when no epoch had finished.
"""

import logging
import os
import socket
import threading

import billiard.process
from celery.signals import worker_shutting_down
from sqlalchemy import select

from app.broker import FINE_TUNE_TASK, enqueue
from app.db import get_sessionmaker
from app.finetune import lifecycle
from app.finetune.models import FineTuningJob
from app.status import Status

log = logging.getLogger(__name__)


def this_worker_names() -> list[str]:
    """The `worker` values this worker's processes claim jobs under (finetune_runner's
    worker_name: host and pid), the main process and its pool's children."""
    host = socket.gethostname()
    pids = [os.getpid(), *(child.pid for child in billiard.process.active_children())]
    return [f"{host}:{pid}" for pid in pids]


def hand_back(worker_names: list[str]) -> list[str]:
    """Re-queue the running jobs claimed under these names; returns their ids."""
    with get_sessionmaker()() as session:
        rows = session.scalars(
            select(FineTuningJob)
            .where(
                FineTuningJob.status == Status.RUNNING,
                FineTuningJob.worker.in_(worker_names),
            )
            .with_for_update()
        ).all()
        for row in rows:
            row.status = Status.QUEUED
            row.worker = None
            row.heartbeat_at = None
            lifecycle.add_event(
                session,
                row.id,
                "The worker is shutting down: job handed back to the queue; the next worker "
                "resumes it after its last finished epoch (from the start if none finished)",
            )
        session.commit()
        ids = [row.id for row in rows]
    for job_id in ids:
        enqueue(FINE_TUNE_TASK, job_id)  # if the broker is down, the reaper re-sends it later
    return ids


def _hand_back_quietly(worker_names: list[str]) -> None:
    try:
        ids = hand_back(worker_names)
        if ids:
            log.info("shutting down: handed back %s", ", ".join(ids))
    except Exception:  # the reaper re-queues them once heartbeats stop
        log.exception("handing jobs back failed")


@worker_shutting_down.connect
def _on_worker_shutting_down(**_: object) -> None:
    # Called inside the signal handler, maybe mid-query on this very thread: the database
    # and broker work goes to a thread of its own.
    names = this_worker_names()
    threading.Thread(target=_hand_back_quietly, args=(names,), name="hand-back").start()
