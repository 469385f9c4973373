"""SIGTERM to a worker mid-job (Celery's warm shutdown), with the solo pool and with the
prefork pool docker-compose uses: the worker exits promptly, the job goes back to `queued`
with an event saying so, and the next worker takes it up."""

import os
import secrets
import signal
import subprocess
import time

import pytest

from tests.conftest import ROOT
from tests.files.data import chat_rows, jsonl
from tests.workers.conftest import WorkerProcess

LONG = {"n_epochs": 200, "batch_size": 1, "learning_rate_multiplier": 1}


class PoolWorker(WorkerProcess):
    def __init__(self, log_dir, pool: str) -> None:  # noqa: ANN001
        super().__init__(log_dir)
        self.pool = pool

    def start(self) -> "PoolWorker":
        cmd = [
            str(ROOT / ".venv" / "bin" / "celery"),
            "-A",
            "workers.celery_app",
            "worker",
            f"--pool={self.pool}",
            "--concurrency=1",
            "-Q",
            os.environ["CELERY_QUEUE"],
            "-n",
            f"test-{secrets.token_hex(3)}@%h",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=dict(os.environ),
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while " ready." not in self.output():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.output()
            time.sleep(0.2)
        return self


def job_state(client, job_id: str) -> tuple[str, list[str]]:
    job = client.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    events = client.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 1000})
    return job["status"], [e["message"] for e in events.json()["data"]]


def wait_for(client, job_id: str, condition, what: str, worker: WorkerProcess) -> None:
    deadline = time.monotonic() + 300
    while not condition(*job_state(client, job_id)):
        assert time.monotonic() < deadline, (
            f"{what}: {job_state(client, job_id)}\n{worker.output()[-3000:]}"
        )
        time.sleep(0.3)


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_sigterm_mid_job_hands_the_job_back(client, settings_env, tmp_path, pool) -> None:
    first = PoolWorker(tmp_path, pool).start()
    second = None
    try:
        file_id = client.post(
            "/v1/files",
            files={"file": ("a.jsonl", jsonl(chat_rows(12)))},
            data={"purpose": "fine-tune"},
        ).json()["id"]
        r = client.post(
            "/v1/fine_tuning/jobs",
            json={
                "model": client.app.state.engine.name,
                "training_file": file_id,
                "hyperparameters": LONG,
            },
        )
        job_id = r.json()["id"]
        wait_for(
            client,
            job_id,
            lambda s, ev: any(m.startswith("Step ") for m in ev),
            "training under way",
            first,
        )
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(timeout=120) == 0, first.output()[-3000:]
        status, events = job_state(client, job_id)
        assert status == "queued", (status, events[:5])
        assert any("handed back" in m for m in events)
        assert "handed back" in first.output()
        # The next worker takes it from the broker.
        second = PoolWorker(tmp_path, pool).start()
        wait_for(
            client,
            job_id,
            lambda s, ev: s == "running" and any("attempt 2" in m for m in ev),
            "picked up again",
            second,
        )
        client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
        wait_for(client, job_id, lambda s, ev: s == "cancelled", "cancelled", second)
    finally:
        for w in (first, second):
            if w is not None:
                w.stop()
