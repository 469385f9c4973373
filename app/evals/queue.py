"""Hands an evaluation to the worker through the broker (the row is the truth)."""

import logging

log = logging.getLogger(__name__)

EVAL_TASK = "adaptd.evaluate"


def enqueue_eval(eval_id: str) -> None:
    from workers.celery_app import celery_app

    try:
        celery_app.send_task(EVAL_TASK, args=[eval_id])
    except Exception:  # noqa: BLE001 - the row stays queued; the requeue sweep resends it
        log.warning("could not enqueue evaluation %s; it stays queued", eval_id)
