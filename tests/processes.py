"""Real service processes for fault tests: the API under uvicorn, a private Redis."""

import os
import signal
import subprocess
import sys
import time

import httpx
import redis

from tests.conftest import ADMIN_KEY, ROOT, free_port


class ApiProcess:
    def __init__(self) -> None:
        self.port = free_port()
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
            env=dict(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=60,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.http.get("/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None and time.monotonic() < deadline, "API did not start"
            time.sleep(0.2)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


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
