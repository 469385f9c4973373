"""A job that runs out of memory fails once, as `out_of_memory`, instead of being retried:
a MemoryError in training, and the pool process killed with SIGKILL (what the kernel's
out-of-memory killer sends) while it trains, with the prefork pool docker-compose runs."""

import os
import signal
import socket
import subprocess
import time

from billiard.exceptions import WorkerLostError
from sqlalchemy import select

from app.db import get_sessionmaker
from app.finetune import lifecycle
from app.finetune.models import FineTuningJob
from tests.workers.jobs import create_job
from workers import finetune_runner
from workers.killed import fail_if_killed, killed_by_sigkill

LONG = {"n_epochs": 200, "batch_size": 1, "learning_rate_multiplier": 1}
DEADLINE_S = 300


def _create_job(client) -> str:
    return create_job(client, LONG).json()["id"]


def _row(job_id: str) -> FineTuningJob:
    with get_sessionmaker()() as session:
        return session.scalar(select(FineTuningJob).where(FineTuningJob.id == job_id))


def _messages(client, job_id: str) -> list[str]:
    events = client.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 1000})
    return [e["message"] for e in events.json()["data"][::-1]]


def test_a_memory_error_in_training_fails_the_job_once(client, monkeypatch) -> None:
    job_id = _create_job(client)

    def out_of_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(finetune_runner, "train_objective", out_of_memory)
    finetune_runner.run_job(job_id)  # as the worker's task runs it
    job = client.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    assert job["status"] == "failed" and job["attempts"] == 1
    assert job["error"]["code"] == "out_of_memory"
    assert "ran out of memory" in job["error"]["message"]
    assert "not retried" in job["error"]["message"]
    finetune_runner.run_job(job_id)  # a second delivery finds it finished
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}").json()["attempts"] == 1


def test_a_pool_process_killed_mid_job_fails_it_as_out_of_memory(client, start_worker) -> None:
    worker = start_worker("prefork")
    job_id = _create_job(client)
    deadline = time.monotonic() + DEADLINE_S
    while not any(m.startswith("Step ") for m in _messages(client, job_id)):
        assert time.monotonic() < deadline, worker.output()[-3000:]
        time.sleep(0.3)
    row = _row(job_id)
    assert row.status == "running" and row.worker is not None
    pid = int(row.worker.rsplit(":", 1)[1])
    assert pid != worker.proc.pid  # the pool process, not the worker's main process
    os.kill(pid, signal.SIGKILL)

    # Until the job ends or is tried again (what happened before: redelivered, then
    # re-queued by the reaper once its heartbeat went silent).
    while (row := _row(job_id)).status not in ("failed", "succeeded", "cancelled") and (
        row.attempts < 2
    ):
        assert time.monotonic() < deadline, worker.output()[-3000:]
        time.sleep(0.3)
    assert row.status == "failed" and row.attempts == 1, (row.status, row.attempts)
    assert row.error["code"] == "out_of_memory"
    assert "killed (SIGKILL)" in row.error["message"]
    assert any("Job failed: " in m and "SIGKILL" in m for m in _messages(client, job_id))
    assert worker.proc.poll() is None  # the worker goes on, with a new pool process


def _lost(status: str) -> WorkerLostError:
    return WorkerLostError(f"Worker exited prematurely: {status} Job: 0.")  # billiard's words


def test_only_a_sigkill_of_the_jobs_own_gone_process_fails_it(client) -> None:
    assert killed_by_sigkill(_lost("signal 9 (SIGKILL)"))
    assert not killed_by_sigkill(_lost("signal 15 (SIGTERM)"))
    assert not killed_by_sigkill(_lost("exitcode 1"))
    assert not killed_by_sigkill(RuntimeError("signal 9"))

    gone = subprocess.Popen(["true"])
    gone.wait()
    host = socket.gethostname()
    for worker, exc, fails in [
        (f"{host}:{os.getpid()}", _lost("signal 9 (SIGKILL)"), False),  # still alive
        (f"other-host:{gone.pid}", _lost("signal 9 (SIGKILL)"), False),  # not this host's
        (f"{host}:{gone.pid}", _lost("signal 15 (SIGTERM)"), False),  # the reaper's case
        (f"{host}:{gone.pid}", _lost("signal 9 (SIGKILL)"), True),
    ]:
        job_id = _create_job(client)
        assert lifecycle.claim(job_id, worker, 60, 2) is not None
        assert fail_if_killed(job_id, exc) is fails
        row = _row(job_id)
        assert row.status == ("failed" if fails else "running"), worker
        if fails:
            assert row.error["code"] == "out_of_memory" and row.attempts == 1
