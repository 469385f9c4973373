"""A pool process killed while it trains (SIGKILL: what the kernel's out-of-memory killer
sends) fails its job as `out_of_memory` instead of having it retried.

Left alone, the job would be redelivered and retried until its attempts ran out, each
attempt growing to the same size and being killed the same way. So the fine-tuning task does
not requeue its message when its process is lost (`reject_on_worker_lost=False`): Celery's
main process acknowledges it and sends `task_failure` with a WorkerLostError, and this
handler, in the main process, fails the job when the process was killed with SIGKILL. Any
other loss (another signal, an exit) leaves the job running with a silent heartbeat, and
the reaper re-queues it for another attempt as before; so does a process ended while the
worker shuts down (handback.py). A worker whose main process is killed (the solo pool) is not
seen here: the reaper handles it as a lost worker.
"""

import logging
import re
import socket
from typing import Any

import billiard.process
from billiard.exceptions import WorkerLostError
from celery.signals import task_failure
from celery.worker import state as worker_state

from app.broker import FINE_TUNE_TASK
from app.finetune import lifecycle

log = logging.getLogger(__name__)

# billiard words a lost process as "Worker exited prematurely: signal 9 (SIGKILL) Job: 3."
_SIGKILL = re.compile(r"\bsignal 9\b")


def killed_by_sigkill(exc: BaseException) -> bool:
    return isinstance(exc, WorkerLostError) and bool(_SIGKILL.search(str(exc)))


def is_gone_pool_process(worker: str) -> bool:
    """`worker` (a Claim's worker name, host:pid) was one of this host's processes and is no
    longer this worker's main process or one of its live pool processes."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    alive = {billiard.process.current_process().pid}
    alive |= {child.pid for child in billiard.process.active_children()}
    return int(pid) not in alive


def fail_if_killed(job_id: str, exc: BaseException) -> bool:
    """Fail the job as out of memory when its process was killed with SIGKILL."""
    if not killed_by_sigkill(exc):
        return False  # the reaper re-queues it once its heartbeat stops
    running = lifecycle.running_worker(job_id)
    if running is None or not is_gone_pool_process(running[0]):
        return False
    worker, attempt = running
    failed = lifecycle.fail_killed(job_id, worker, attempt, "SIGKILL")
    if failed:
        log.error("job %s failed: its process %s was killed (SIGKILL)", job_id, worker)
    return failed


@task_failure.connect
def _on_task_failure(
    sender: Any = None, exception: BaseException | None = None, args: Any = None, **_: Any
) -> None:
    if getattr(sender, "name", None) != FINE_TUNE_TASK or exception is None or not args:
        return
    if worker_state.should_stop is not None or worker_state.should_terminate is not None:
        return  # shutting down: processes are ended on purpose, handback re-queues the jobs
    try:
        fail_if_killed(str(args[0]), exception)
    except Exception:  # the reaper still re-queues the job once it is silent
        log.exception("could not record the loss of job %s's process", args[0])
