"""The worker's entry point (`celery -A workers.celery_app worker`): the app configured in
app/broker.py, plus the modules that define its tasks."""

from app import models as _models  # noqa: F401 - every table mapped, flushes audited
from app.broker import celery_app as _celery_app
from app.observability.task_ids import install_request_ids

celery_app = _celery_app()
# handback: on SIGTERM, running fine-tuning jobs go back to the queue; killed: a pool process
# killed mid-job (out of memory) fails its job.
celery_app.conf.update(
    include=["workers.tasks", "workers.eval_tasks", "workers.handback", "workers.killed"]
)
install_request_ids(celery_app)  # the sending request's id in the worker's log lines
