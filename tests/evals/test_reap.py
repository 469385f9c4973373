from datetime import timedelta

import pytest

from app.db import get_sessionmaker, utcnow
from app.evals import lifecycle
from app.evals.models import Evaluation

pytestmark = pytest.mark.both_databases


def _row(eval_id: str, status: str, age_s: float) -> Evaluation:
    old = utcnow() - timedelta(seconds=age_s)
    return Evaluation(
        id=eval_id,
        tenant="default",
        file_id="file-x",
        variants=["m"],
        metric="label",
        params={},
        status=status,
        heartbeat_at=old,
        created_at=old,
    )


def test_reap_fails_silent_runs_and_resends_lost_queued(client) -> None:
    with get_sessionmaker()() as s:
        s.add_all(
            [
                _row("eval_dead", "running", 600),
                _row("eval_busy", "running", 1),
                _row("eval_lost", "queued", 600),
                _row("eval_fresh", "queued", 1),
                _row("eval_done", "succeeded", 600),
            ]
        )
        s.commit()
    assert lifecycle.reap(heartbeat_timeout_s=120, resend_after_s=300) == ["eval_lost"]
    # The resend clock restarted: a second pass right away sends nothing again.
    assert lifecycle.reap(heartbeat_timeout_s=120, resend_after_s=300) == []
    with get_sessionmaker()() as s:
        states = {e.id: (e.status, (e.error or {}).get("code")) for e in s.query(Evaluation)}
    assert states == {
        "eval_dead": ("failed", "worker_lost"),
        "eval_busy": ("running", None),
        "eval_lost": ("queued", None),
        "eval_fresh": ("queued", None),
        "eval_done": ("succeeded", None),
    }
