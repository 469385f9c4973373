"""The broker restarted while jobs are queued: Redis loses every message, and the database
state re-sends what it dropped, so no queued job is lost."""

import time

import pytest

from tests.files.data import chat_rows, jsonl, upload
from tests.processes import ApiProcess, RedisProcess, WorkerProcess

QUICK = {"n_epochs": 2, "batch_size": 12, "learning_rate_multiplier": 1, "r": 4}


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_queued_jobs_survive_a_broker_restart(settings_env, monkeypatch, tmp_path) -> None:
    from tests.conftest import clean_database

    clean_database()
    broker = RedisProcess().start()
    monkeypatch.setenv("CELERY_BROKER_URL", broker.url)
    monkeypatch.setenv("JOB_QUEUE_RESEND_S", "3")
    monkeypatch.setenv("JOB_REAPER_INTERVAL_S", "1")
    api = ApiProcess()
    worker = None
    try:
        http = api.http
        base = http.get("/v1/models").json()["data"][0]["id"]
        file_id = upload(http, jsonl(chat_rows(12)), "a.jsonl").json()["id"]
        jobs = []
        for suffix in ("one", "two"):
            r = http.post(
                "/v1/fine_tuning/jobs",
                json={
                    "model": base,
                    "training_file": file_id,
                    "suffix": suffix,
                    "method": {"type": "supervised", "supervised": {"hyperparameters": QUICK}},
                },
            )
            assert r.status_code in (200, 201), r.text
            jobs.append(r.json()["id"])
        assert broker.queued_messages() >= 2  # no worker yet: the messages wait in Redis

        broker.kill()
        broker.start()  # same port, empty: the queued messages are gone
        assert broker.queued_messages() == 0

        worker = WorkerProcess(tmp_path).start()
        deadline = time.monotonic() + 300
        while True:
            states = [http.get(f"/v1/fine_tuning/jobs/{j}").json()["status"] for j in jobs]
            if all(s in ("succeeded", "failed", "cancelled") for s in states):
                break
            assert time.monotonic() < deadline, f"jobs stuck: {states}"
            time.sleep(0.5)
        assert states == ["succeeded", "succeeded"]
        for job_id in jobs:
            events = http.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=100").json()["data"]
            assert any("sent to the queue again" in e["message"] for e in events)
    finally:
        if worker is not None:
            worker.stop()
        api.kill()
        broker.kill()
