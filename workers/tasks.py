"""Thin Celery tasks: take ids only, call a service that holds the logic."""

import logging

from celery.signals import worker_ready

from app.background.reaper import Reaper
from app.broker import FINE_TUNE_TASK
from workers.celery_app import celery_app

log = logging.getLogger(__name__)


@celery_app.task(name="adaptd.ping")
def ping() -> str:
    return "pong"


# A process lost mid-job is not redelivered (reject_on_worker_lost=False): killed for memory
# it fails the job (workers/killed.py); lost otherwise, the reaper re-queues the job.
@celery_app.task(name=FINE_TUNE_TASK, acks_late=True, reject_on_worker_lost=False)
def fine_tune(job_id: str) -> None:
    from workers.finetune_runner import run_job  # torch loads in the worker only

    run_job(job_id)


@worker_ready.connect
def _start_reaper(**_: object) -> None:
    # Every worker also reaps: a job whose worker died is picked up even with no API up.
    Reaper(run_at_start=True).start()
    log.info("job reaper started")
