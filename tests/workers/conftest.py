"""Worker tests: PostgreSQL (shared with the worker process), real Redis, a real
`celery worker` subprocess, and short heartbeat/reaper timings."""

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

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


class WorkerProcess:
    """`celery -A workers.celery_app worker --pool=solo` (or another pool, with one child
    process: docker-compose runs prefork) as a child process."""

    def __init__(self, log_dir: Path, pool: str = "solo") -> None:
        self.log = log_dir / f"worker-{secrets.token_hex(3)}.log"
        self.pool = pool
        self.proc: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        queue = os.environ["CELERY_QUEUE"]
        cmd = [
            str(ROOT / ".venv" / "bin" / "celery"),
            "-A",
            "workers.celery_app",
            "worker",
            f"--pool={self.pool}",
            *(["--concurrency=1"] if self.pool != "solo" else []),
            "-Q",
            queue,
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
        while " ready." not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start_worker(settings_env, tmp_path: Path) -> Iterator:
    workers: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        worker = WorkerProcess(tmp_path).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
