"""The evaluation task: an id in, workers/eval_runner.py does the work."""

from app.broker import EVALUATE_TASK
from workers.celery_app import celery_app
from workers.eval_runner import run
from workers.serving import worker_engine


@celery_app.task(name=EVALUATE_TASK, acks_late=True)
def evaluate(eval_id: str) -> None:
    run(eval_id, worker_engine())
