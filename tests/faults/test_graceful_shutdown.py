"""SIGTERM to a real uvicorn process with a stream in flight: /readyz turns 503 while the
API still serves (the drain), then no new connection is taken, the stream runs to its last
token and [DONE], and only then does the process exit. With a short SHUTDOWN_GRACE_S the
stream is cut instead of holding the exit."""

import json
import secrets
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from transformers import AutoTokenizer

from tests.conftest import ADMIN_KEY
from tests.processes import ApiProcess
from tests.tiny_model import build_tiny_model

MAX_TOKENS = 4000  # long enough to outlast the drain on this model, even on an idle machine


@pytest.fixture(scope="module")
def long_context_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-long", context=8192)


class Server(ApiProcess):
    """The API on the long-context model, with the given drain and grace, its log kept."""

    def __init__(self, tmp: Path, model: Path, drain_s: float, grace_s: float) -> None:
        env = {
            "BASE_MODEL": str(model),
            "SHUTDOWN_DRAIN_S": str(drain_s),
            "SHUTDOWN_GRACE_S": str(grace_s),
            "MAX_TOKENS_CAP": "8192",
        }
        super().__init__(env, log=tmp / f"api-{secrets.token_hex(3)}.log")

    def request_line(self, request_id: str) -> dict:
        for line in self.output().splitlines():
            if line.startswith("{") and f'"request_id": "{request_id}"' in line:
                return json.loads(line)
        raise AssertionError(f"no log line for {request_id}:\n{self.output()[-3000:]}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Stream(threading.Thread):
    """A streamed completion read on its own thread; `started` is set at the first chunk."""

    def __init__(self, base: str, eos_id: int) -> None:
        super().__init__(daemon=True)
        self.base, self.eos_id = base, eos_id
        self.started = threading.Event()
        self.lines: list[str] = []
        self.error: Exception | None = None

    def run(self) -> None:
        body = {
            "model": "tiny-long",
            "prompt": "hello",
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
            "logit_bias": {str(self.eos_id): -100},  # no early end
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        headers = {"Authorization": f"Bearer {ADMIN_KEY}", "X-Request-ID": "long-stream"}
        try:
            with httpx.stream(
                "POST", f"{self.base}/v1/completions", json=body, headers=headers, timeout=300
            ) as r:
                assert r.status_code == 200, r.read()
                for line in r.iter_lines():
                    if line:
                        self.lines.append(line)
                        self.started.set()
        except Exception as exc:  # examined by the test
            self.error = exc
        finally:
            self.started.set()

    def usage(self) -> dict | None:
        for line in self.lines:
            if '"usage":{' in line:
                return json.loads(line.removeprefix("data: "))["usage"]
        return None


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_sigterm_drains_then_finishes_the_stream_in_flight(
    settings_env, long_context_model: Path, tmp_path: Path
) -> None:
    drain_s = 1.0
    server = Server(tmp_path, long_context_model, drain_s=drain_s, grace_s=300)
    eos = AutoTokenizer.from_pretrained(long_context_model).eos_token_id
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    try:
        stream = Stream(server.base, eos)
        stream.start()
        assert stream.started.wait(120) and stream.error is None
        sent_at = time.time()
        server.proc.send_signal(signal.SIGTERM)
        # The drain: not ready, but still answering.
        r = httpx.get(f"{server.base}/readyz", timeout=10)
        assert r.status_code == 503 and r.json()["checks"]["accepting"] is False
        assert httpx.get(f"{server.base}/v1/models", headers=auth, timeout=10).status_code == 200
        # After it: no new connections.
        while True:
            try:
                httpx.get(f"{server.base}/healthz", timeout=2)
            except httpx.ConnectError:
                break
            assert server.proc.poll() is None
            time.sleep(0.1)
        stream.join(timeout=300)
        assert stream.error is None, stream.error
        assert stream.lines[-1] == "data: [DONE]"
        assert stream.usage()["completion_tokens"] == MAX_TOKENS
        assert server.proc.wait(timeout=120) in (0, -signal.SIGTERM)
        line = server.request_line("long-stream")
        assert line["status"] == 200 and line["completion_tokens"] == MAX_TOKENS
        # It was still generating after the listener closed, and was let finish.
        assert line["ts"] > sent_at + drain_s, (line, sent_at)
    finally:
        server.close()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_grace_period_bounds_the_wait(settings_env, long_context_model: Path, tmp_path: Path):
    server = Server(tmp_path, long_context_model, drain_s=0, grace_s=0.5)
    eos = AutoTokenizer.from_pretrained(long_context_model).eos_token_id
    try:
        stream = Stream(server.base, eos)
        stream.start()
        assert stream.started.wait(120) and stream.error is None
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=120)
        stream.join(timeout=60)
        assert "data: [DONE]" not in stream.lines  # cut, not finished
        assert "after SHUTDOWN_GRACE_S" in server.output()
    finally:
        server.close()
