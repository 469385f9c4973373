"""SIGTERM to a worker mid-job (Celery's warm shutdown), with the solo pool and with the
prefork pool docker-compose uses: the worker exits promptly, the job goes back to `queued`
with an event saying so, and the next worker resumes it after its last finished epoch
(no finished epoch trained again); once the job ends, its epochs folder is gone."""

import json
import signal
import time
from pathlib import Path

import pytest

from tests.processes import WorkerProcess
from tests.workers.jobs import create_job
from workers.finetune_runner import INDEX_FILE, epochs_folder

LONG = {"n_epochs": 200, "batch_size": 1, "learning_rate_multiplier": 1}
DEADLINE_S = 300


def job_events(client, job_id: str) -> tuple[str, list[dict]]:
    """The job's status and its events, oldest first."""
    job = client.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    events = client.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 1000})
    return job["status"], events.json()["data"][::-1]


def messages(events: list[dict]) -> list[str]:
    return [e["message"] for e in events]


def wait_for(client, job_id: str, condition, what: str, worker: WorkerProcess) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition(*job_events(client, job_id)):
        status, events = job_events(client, job_id)
        assert time.monotonic() < deadline, (
            f"{what}: {status} {messages(events)[-10:]}\n{worker.output()[-3000:]}"
        )
        time.sleep(0.3)


def wait_until(condition, what: str, worker: WorkerProcess) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"{what}\n{worker.output()[-3000:]}"
        time.sleep(0.3)


def saved_epochs(folder: Path) -> int:
    try:
        index = json.loads((folder / INDEX_FILE).read_text())
    except (OSError, ValueError):
        return 0
    return len(index["saved"])


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_sigterm_mid_job_hands_the_job_back_and_it_resumes(
    client, settings_env, start_worker, pool
) -> None:
    first = start_worker(pool)
    job_id = create_job(client, LONG).json()["id"]
    folder = epochs_folder(settings_env.adapters_dir, job_id)
    # Two epochs finished and checkpointed (12 steps each), the third under way.
    wait_until(lambda: saved_epochs(folder) >= 2, "two epochs checkpointed", first)
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(timeout=120) == 0, first.output()[-3000:]
    status, events = job_events(client, job_id)
    assert status == "queued", (status, messages(events)[-5:])
    assert any("handed back" in m for m in messages(events))
    assert "handed back" in first.output()

    # The next worker takes it from the broker and goes on after the last epoch saved.
    second = start_worker(pool)

    def resumed_and_stepping(status: str, events: list[dict]) -> bool:
        text = messages(events)
        at = next((i for i, m in enumerate(text) if m.startswith("Resuming after")), None)
        return at is not None and any(m.startswith("Step ") for m in text[at:])

    wait_for(client, job_id, resumed_and_stepping, "resumed and training", second)
    _, events = job_events(client, job_id)
    at = next(i for i, e in enumerate(events) if e["message"].startswith("Resuming after"))
    resumed = events[at]["data"]
    assert resumed["epoch"] >= 2 and resumed["step"] == 12 * resumed["epoch"]
    assert any("attempt 2" in m for m in messages(events[:at]))
    after = [e["data"] for e in events[at:] if e["message"].startswith("Step ")]
    # No finished epoch trained again: every step after the resume is a new one, in
    # the epoch after the checkpoint or later; the unfinished epoch is trained again.
    assert all(d["step"] > resumed["step"] for d in after), (resumed, after[:3])
    assert all(d["epoch"] > resumed["epoch"] for d in after)
    assert after[0]["step"] <= resumed["step"] + 24  # the next logged step (every 24)

    client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    wait_for(client, job_id, lambda s, ev: s == "cancelled", "cancelled", second)
    wait_until(lambda: not folder.exists(), "epochs folder removed once ended", second)
