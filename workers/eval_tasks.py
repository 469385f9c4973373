"""The evaluation task: an id in, the service does the work."""

from app.broker import EVALUATE_TASK
from app.evals import service
from workers.celery_app import celery_app
from workers.serving import worker_engine


@celery_app.task(name=EVALUATE_TASK, acks_late=True)
def evaluate(eval_id: str) -> None:
    service.run(eval_id, worker_engine())
