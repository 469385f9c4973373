"""The id of the request that created a fine-tuning job is on the worker's log lines for
that job's task, and not on lines of other work."""

import time

from tests.workers.jobs import create_job


def test_request_id_reaches_the_worker_logs(client, start_worker) -> None:
    worker = start_worker()
    r = create_job(client, {"n_epochs": 1}, headers={"X-Request-ID": "job-req-7781"})
    assert r.headers["x-request-id"] == "job-req-7781"
    job_id = r.json()["id"]
    deadline = time.monotonic() + 300
    while client.get(f"/v1/fine_tuning/jobs/{job_id}").json()["status"] not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        assert time.monotonic() < deadline, worker.output()[-3000:]
        time.sleep(0.3)
    lines = worker.output().splitlines()
    tagged = [line for line in lines if "request_id=job-req-7781" in line]
    assert any("adaptd.fine_tune" in line and "started" in line for line in tagged), tagged
    assert any(job_id in line for line in tagged), tagged
    # Lines outside the task (startup) carry no id.
    assert any("request_id=- " in line for line in lines)
