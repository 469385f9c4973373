"""A background thread that keeps jobs from being stuck: it fails or re-queues running jobs
whose worker stopped heartbeating, and re-sends queued jobs the broker seems to have lost.

Runs in the API process (lifespan) and in every worker (on start), with no one watching;
the transitions are compare-and-set, so several reapers at once are harmless.
"""

import logging

from app.background.periodic import PeriodicThread
from app.broker import EVALUATE_TASK, FINE_TUNE_TASK, enqueue
from app.evals import lifecycle as evals
from app.finetune import lifecycle as finetune
from app.settings import get_settings

log = logging.getLogger(__name__)


def reap_once() -> list[str]:
    settings = get_settings()
    ids = finetune.reap(
        settings.job_heartbeat_timeout_s, settings.job_queue_resend_s, settings.job_max_attempts
    )
    for job_id in ids:
        enqueue(FINE_TUNE_TASK, job_id)
    if ids:
        log.warning("reaper re-sent fine-tuning jobs: %s", ", ".join(ids))
    eval_ids = evals.reap(settings.job_heartbeat_timeout_s, settings.job_queue_resend_s)
    for eval_id in eval_ids:
        enqueue(EVALUATE_TASK, eval_id)
    if eval_ids:
        log.warning("reaper re-sent evaluations: %s", ", ".join(eval_ids))
    return ids + eval_ids


class Reaper(PeriodicThread):
    def __init__(self, *, run_at_start: bool = False) -> None:
        super().__init__(
            "job reaper",
            reap_once,
            lambda: get_settings().job_reaper_interval_s,
            run_at_start=run_at_start,
        )
