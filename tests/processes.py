"""Real service processes, for fault tests and benchmarks alike: the API under uvicorn, a
Celery worker, a private Redis. Free of the test fixtures (bench/server.py starts its services
with `ApiProcess` too), so it imports nothing from tests.conftest."""

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApiProcess:
    """`uvicorn app.asgi:app` on a free port, ready (/readyz 200) when constructed. `env`
    adds to or overrides this process's environment (`replace_env`: is the whole
    environment); `log` keeps its stderr (the request log). `http` is a client with the
    environment's ADAPTD_ADMIN_KEY."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        log: Path | None = None,
        *,
        replace_env: bool = False,
        ready_timeout: float = 120,
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = dict(env or {}) if replace_env else {**os.environ, **(env or {})}
        self.key = self.env.get("ADAPTD_ADMIN_KEY", "")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app.asgi:app",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb") if log is not None else subprocess.DEVNULL,
        )
        self.http = httpx.Client(
            base_url=self.base,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=60,
        )
        deadline = time.monotonic() + ready_timeout
        while True:
            try:
                if self.http.get("/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            alive = self.proc.poll() is None
            assert alive and time.monotonic() < deadline, f"API did not start\n{self.output()}"
            time.sleep(0.2)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log is not None else ""

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM (a graceful shutdown), SIGKILL if it is not gone within 30 s."""
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def rss_mib(self) -> float:
        """Resident memory of the process, from /proc."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


class RedisProcess:
    """A redis-server of the test's own, on its own port, keeping nothing on disk: killing
    it loses every queued message, as a crashed broker would."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RedisProcess":
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if redis.Redis(port=self.port).ping():
                    return self
            except redis.ConnectionError:
                pass
            assert time.monotonic() < deadline, "redis did not start"
            time.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def queued_messages(self) -> int:
        client = redis.Redis(port=self.port)
        return sum(client.llen(k) for k in client.keys("*") if client.type(k) == b"list")


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
