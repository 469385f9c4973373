"""The worker's entry point (`celery -A workers.celery_app worker`): the app configured in
app/broker.py, plus the modules that define its tasks."""

from app.broker import celery_app as _celery_app

celery_app = _celery_app()
celery_app.conf.update(include=["workers.tasks", "workers.eval_tasks"])
