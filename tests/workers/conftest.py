"""Worker tests: PostgreSQL (shared with the worker process), real Redis, a real
`celery worker` subprocess (`start_worker`, tests/conftest.py), and short heartbeat/reaper
timings."""

import pytest

HEARTBEAT_TIMEOUT_S = "6"


@pytest.fixture(autouse=True)
def fast_reaper(monkeypatch: pytest.MonkeyPatch) -> None:
    # Set before settings_env reads the environment; the worker inherits it too.
    monkeypatch.setenv("JOB_HEARTBEAT_TIMEOUT_S", HEARTBEAT_TIMEOUT_S)
    monkeypatch.setenv("JOB_REAPER_INTERVAL_S", "1")
    monkeypatch.setenv("DEVICE", "cpu")


@pytest.fixture
def db_url(postgres_url: str) -> str:
    return postgres_url  # the worker process must see the same database
