"""The request id travels with the Celery tasks a request sends (a message header), and
every log line a worker writes while running such a task carries it (`%(request_id)s`).

Signals, not arguments: the tasks keep taking ids only, and the reaper's re-sends (outside
any request) simply have no request id.
"""

import logging

from celery import Celery
from celery.signals import before_task_publish, task_postrun, task_prerun

from app.observability.context import current_request_id, request_id

HEADER = "adaptd_request_id"
WORKER_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] request_id=%(request_id)s %(message)s"
TASK_FORMAT = (
    "[%(asctime)s: %(levelname)s/%(processName)s] request_id=%(request_id)s "
    "%(task_name)s[%(task_id)s]: %(message)s"
)

log = logging.getLogger(__name__)


def _stamp_request_id(headers: dict | None = None, **_: object) -> None:
    rid = request_id()
    if rid is not None and headers is not None:
        headers.setdefault(HEADER, rid)


def _enter_task(
    task=None,
    task_id: str | None = None,
    args: tuple | None = None,
    **_: object,
) -> None:
    rid = getattr(task.request, HEADER, None) if task is not None else None
    current_request_id.set(rid if isinstance(rid, str) else None)
    # Tasks take ids only, so their arguments are safe to log and say which job this is.
    log.info("task %s[%s] started for %s", getattr(task, "name", "?"), task_id, list(args or ()))


def _leave_task(**_: object) -> None:
    current_request_id.set(None)


def _with_request_id(factory):
    def make(*args, **kwargs):
        record = factory(*args, **kwargs)
        if not hasattr(record, "request_id"):
            record.request_id = request_id() or "-"
        return record

    make.adaptd = True  # type: ignore[attr-defined]
    return make


def install_request_ids(app: Celery | None = None) -> None:
    """Connect the signals (once per process) and, for a worker app, log formats that show
    the id. Safe to call from both the API and the worker."""
    before_task_publish.connect(_stamp_request_id, weak=False, dispatch_uid="adaptd-rid-pub")
    task_prerun.connect(_enter_task, weak=False, dispatch_uid="adaptd-rid-pre")
    task_postrun.connect(_leave_task, weak=False, dispatch_uid="adaptd-rid-post")
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "adaptd", False):
        logging.setLogRecordFactory(_with_request_id(factory))
    if app is not None:
        app.conf.worker_log_format = WORKER_FORMAT
        app.conf.worker_task_log_format = TASK_FORMAT
