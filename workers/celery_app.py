"""The Celery app: broker from settings, late acks, one task at a time per process.

Redis in production (CELERY_BROKER_URL); kombu's filesystem transport under DATA_DIR when
unset, so `make run` needs no server. No result backend: the database is the truth.
"""

from celery import Celery

from app.audit import recorder as _audit_recorder  # noqa: F401 - adapters a job registers
from app.observability.task_ids import install_request_ids
from app.settings import get_settings


def make_celery() -> Celery:
    settings = get_settings()
    broker = settings.resolved_broker_url
    app = Celery(
        "adaptd",
        broker=broker,
        # handback: on SIGTERM, running fine-tuning jobs go back to the queue.
        include=["workers.tasks", "workers.eval_tasks", "workers.handback"],
    )
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


celery_app = make_celery()
install_request_ids(celery_app)  # the sending request's id in the worker's log lines
