"""Thin Celery tasks: take ids only, call a service that holds the logic."""

from workers.celery_app import celery_app


@celery_app.task(name="adaptd.ping")
def ping() -> str:
    return "pong"
