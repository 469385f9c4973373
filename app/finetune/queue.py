"""Hands a job to the worker through the broker: the job id only, after the row is committed."""

import logging

log = logging.getLogger(__name__)

FINETUNE_TASK = "adaptd.fine_tune"


def enqueue_job(job_id: str) -> bool:
    """Send the task; False when the broker is unreachable (the job stays `queued` and the
    reaper sends it again later)."""
    from workers.celery_app import celery_app

    try:
        celery_app.send_task(FINETUNE_TASK, args=[job_id])
        return True
    except Exception:  # noqa: BLE001 - the row is the truth; the reaper resends it
        log.warning("could not enqueue fine-tuning job %s; it stays queued", job_id)
        return False
