"""Job transitions and the reaper, on the database directly (no worker process)."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from app.background.reaper import reap_once
from app.db import get_sessionmaker, utcnow
from app.finetune import lifecycle
from app.finetune.models import FineTuningJob, JobEvent
from app.registry.models import Adapter
from tests.files.data import chat_rows, jsonl, upload

pytestmark = pytest.mark.both_databases


@pytest.fixture
def job_id(client) -> str:
    file_id = upload(client, jsonl(chat_rows(12))).json()["id"]
    r = client.post("/v1/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": file_id})
    return r.json()["id"]


def _set(job_id: str, **values) -> None:
    with get_sessionmaker()() as session:
        row = session.get(FineTuningJob, job_id)
        for k, v in values.items():
            setattr(row, k, v)
        session.commit()


def _get(job_id: str) -> FineTuningJob:
    with get_sessionmaker()() as session:
        return session.get(FineTuningJob, job_id)


def _messages(job_id: str) -> list[str]:
    with get_sessionmaker()() as session:
        return list(session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)))


def test_claim_is_idempotent_and_fenced(job_id):
    first = lifecycle.claim(job_id, "w1", 60, 2)
    assert first is not None and first.attempt == 1 and _get(job_id).status == "running"
    assert lifecycle.claim(job_id, "w2", 60, 2) is None  # duplicate delivery, w1 is alive
    _set(job_id, heartbeat_at=utcnow() - timedelta(seconds=120))
    second = lifecycle.claim(job_id, "w2", 60, 2)  # w1 went silent: a redelivery restarts
    assert second is not None and second.attempt == 2
    assert not lifecycle.heartbeat(job_id, 1) and not lifecycle.should_continue(job_id, 1)
    assert lifecycle.heartbeat(job_id, 2) and lifecycle.should_continue(job_id, 2)
    assert lifecycle.fail(job_id, "x", "stale attempt", attempt=1) is False
    assert _get(job_id).status == "running"


def test_cancelled_job_is_skipped_and_never_registered(client, job_id):
    claim = lifecycle.claim(job_id, "w1", 60, 2)
    assert client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    assert not lifecycle.should_continue(job_id, claim.attempt)
    files = lifecycle.AdapterFiles(
        name=f"ft:tiny-llama::{job_id}", path=job_id, bytes=1, step=1, metrics={}, manifest={}
    )
    ok = lifecycle.succeed(claim, final=files, base_model="tiny-llama", trained_tokens=1)
    assert ok is False and _get(job_id).status == "cancelled"
    with get_sessionmaker()() as session:
        assert session.scalar(select(Adapter).where(Adapter.job_id == job_id)) is None
    assert lifecycle.claim(job_id, "w2", 60, 2) is None
    r = client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    assert r.status_code == 200


def test_reaper_requeues_then_fails_a_silent_job(job_id, settings_env, monkeypatch):
    monkeypatch.setattr(settings_env, "job_heartbeat_timeout_s", 30)
    lifecycle.claim(job_id, "w1", 30, 2)
    assert reap_once() == []  # heartbeat is fresh
    _set(job_id, heartbeat_at=utcnow() - timedelta(seconds=31))
    assert reap_once() == [job_id]
    assert _get(job_id).status == "queued"
    assert any("stopped sending heartbeats" in m for m in _messages(job_id))

    assert lifecycle.claim(job_id, "w2", 30, 2).attempt == 2
    _set(job_id, heartbeat_at=utcnow() - timedelta(seconds=31))
    assert reap_once() == []
    row = _get(job_id)
    assert row.status == "failed" and row.error["code"] == "worker_lost"
    assert row.finished_at is not None


def test_reaper_resends_jobs_the_broker_lost(job_id, settings_env, monkeypatch):
    monkeypatch.setattr(settings_env, "job_queue_resend_s", 60)
    assert reap_once() == []  # just sent
    _set(job_id, heartbeat_at=utcnow() - timedelta(seconds=61))
    assert reap_once() == [job_id]
    assert reap_once() == []  # the resend time was refreshed
    row = _get(job_id)
    assert row.status == "queued" and utcnow() - row.heartbeat_at < timedelta(seconds=30)
    assert any("sent to the queue again" in m for m in _messages(job_id))


def test_a_deleted_checkpoint_leaves_the_listings_and_one_an_alias_targets_stays(client, job_id):
    claim = lifecycle.claim(job_id, "w1", 60, 2)
    final_name = f"ft:tiny-llama::{job_id}"

    def files(name: str, step: int) -> lifecycle.AdapterFiles:
        return lifecycle.AdapterFiles(
            name=name, path=f"{job_id}-{step}", bytes=1, step=step, metrics={}, manifest={}
        )

    earlier = [files(f"{final_name}:ckpt-step-{s}", s) for s in (3, 6)]
    assert lifecycle.succeed(
        claim,
        final=files(final_name, 9),
        base_model="tiny-llama",
        trained_tokens=1,
        earlier=earlier,
    )

    def listed() -> list[str]:
        rows = client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()["data"]
        return [c["fine_tuned_model_checkpoint"] for c in rows]

    def models() -> set[str]:
        return {m["id"] for m in client.get("/v1/models").json()["data"]}

    step3, step6 = (e.name for e in earlier)
    assert listed() == [final_name, step6, step3] and {step3, step6} <= models()
    assert client.delete(f"/v1/models/{step3}").status_code == 200
    assert listed() == [final_name, step6] and step3 not in models()
    # Paging past the deleted one's position still works.
    page = client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints", params={"limit": 1}).json()
    assert page["has_more"] is True
    # A checkpoint an alias targets is refused, and stays listed.
    client.post("/v1/aliases", json={"name": "pinned", "targets": [{"model": step6}]})
    r = client.delete(f"/v1/models/{step6}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "model_in_use"
    assert "pinned" in r.json()["error"]["message"]
    assert listed() == [final_name, step6] and step6 in models()
