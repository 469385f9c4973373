"""The evaluation task: an id in, the service does the work."""

from app.evals import service
from app.evals.queue import EVAL_TASK
from workers.celery_app import celery_app
from workers.serving import worker_engine


@celery_app.task(name=EVAL_TASK, acks_late=True)
def evaluate(eval_id: str) -> None:
    service.run(eval_id, worker_engine())
