"""The Celery app as the API and the workers both see it, and the one way to send a task.

Redis in production (CELERY_BROKER_URL); kombu's filesystem transport under DATA_DIR when
unset, so `make run` needs no server. No result backend: the database is the truth. Tasks
are sent by name with an id only, so the API needs none of the task code (workers/).
"""

import logging
from functools import cache

from celery import Celery

from app.settings import get_settings

log = logging.getLogger(__name__)

FINE_TUNE_TASK = "adaptd.fine_tune"
EVALUATE_TASK = "adaptd.evaluate"


def make_celery() -> Celery:
    settings = get_settings()
    broker = settings.resolved_broker_url
    app = Celery("adaptd", broker=broker)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # A task is acknowledged only when it ends, and redelivered if its worker dies;
        # the tasks are idempotent, so a second delivery is safe.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.celery_queue,
    )
    if broker.startswith("filesystem://"):
        folder = settings.broker_folder.resolve()
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        app.conf.broker_transport_options = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
    else:
        # Redelivery after a lost worker: bounded so a dead job is retried promptly.
        app.conf.broker_transport_options = {"visibility_timeout": 3600}
    return app


@cache
def celery_app() -> Celery:
    """This process's Celery app, made on first use (the settings are read then)."""
    return make_celery()


def enqueue(task_name: str, row_id: str) -> bool:
    """Send `task_name(row_id)`; call it after the row is committed, so the worker finds it.
    False when the broker is unreachable: the row stays `queued` and the reaper
    (app/background/reaper.py) sends it again later."""
    try:
        celery_app().send_task(task_name, args=[row_id])
        return True
    except Exception:  # the row is the truth; the reaper resends it
        log.warning("could not send %s for %s; it stays queued", task_name, row_id)
        return False
