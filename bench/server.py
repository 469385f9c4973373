"""Starts the real service (uvicorn, SQLite, a temporary data folder) for benchmarks, with the
process helper the fault tests use (tests/processes.py)."""

import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.processes import ApiProcess

ROOT = Path(__file__).resolve().parent.parent


def temporary_data_dir(prefix: str, max_batch_size: int) -> Path:
    """A fresh data folder for this process and the services it starts (SQLite in it, no
    rate limit, batches as wide as the benchmark's clients), set in the environment."""
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.update(
        {
            "DATA_DIR": str(data_dir),
            "RATE_LIMIT_PER_MINUTE": "0",
            "MAX_BATCH_SIZE": str(max_batch_size),
        }
    )
    os.environ.pop("DATABASE_URL", None)
    return data_dir


class Server:
    def __init__(
        self, extra_env: dict[str, str] | None = None, data_dir: Path | None = None
    ) -> None:
        # Servers sharing a data folder must share the key: each start revokes other
        # bootstrap keys.
        given = (extra_env or {}).get("ADAPTD_ADMIN_KEY")
        self.key = given or "sk-adaptd-bench-" + secrets.token_hex(8)
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="adaptd-bench-"))
        self.env = {
            **os.environ,
            "DATA_DIR": str(self.data_dir),
            "ADAPTD_ADMIN_KEY": self.key,
            **(extra_env or {}),
        }
        if "DATABASE_URL" not in (extra_env or {}):
            self.env.pop("DATABASE_URL", None)  # SQLite in the data folder
        self.api: ApiProcess | None = None
        self.proc: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.url = ""  # once started

    def __enter__(self) -> "Server":
        py = sys.executable
        subprocess.run(
            [py, "-m", "alembic", "upgrade", "head"],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
        )
        self.api = ApiProcess(self.env, replace_env=True, ready_timeout=300)
        self.proc, self.url = self.api.proc, self.api.base
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.workers:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.api is not None:
            self.api.stop()

    def start_worker(self) -> subprocess.Popen:
        """One Celery worker process on the same settings (the embedded filesystem broker
        unless CELERY_BROKER_URL is set)."""
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.celery_app",
                "worker",
                "--pool=solo",
                "--loglevel=WARNING",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.workers.append(worker)
        return worker

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def rss_mib(self) -> float:
        """Resident memory of the server process, from /proc."""
        assert self.api is not None
        return self.api.rss_mib()
