"""A whole (non-streamed) answer whose client gave up stops generating; one request may not
ask for more work than MAX_REQUEST_TOKENS."""

import json
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest

from app.engine.prompts import encode
from tests.conftest import ADMIN_KEY

MAX_TOKENS = 200
N = 3


def wait_for(condition, what: str, guard_s: float = 60) -> None:
    """A hang guard, not a timing check: on a loaded machine this may take long."""
    deadline = time.monotonic() + guard_s
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def raw_post(base_url: str, path: str, body: dict) -> socket.socket:
    """Send a request on a plain socket and return it unread, so the test decides when the
    client goes away."""
    url = urlsplit(base_url)
    payload = json.dumps(body).encode()
    sock = socket.create_connection((url.hostname, url.port))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    sock.sendall(head.encode() + payload)
    return sock


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_rows_of_a_whole_answer_are_cancelled_when_its_client_leaves(
    app, live_server, monkeypatch, path
) -> None:
    engine = app.state.engine
    scheduler = engine.scheduler
    prompt = f"The capital of France is {path}"
    body: dict = {
        "model": engine.name,
        "max_tokens": MAX_TOKENS,
        "n": N,
        "temperature": 0,
        # eos pushed away, so only the token budget or a cancellation ends a row
        "logit_bias": {str(t): -100 for t in engine.eos_ids},
    }
    if path == "/v1/completions":
        body["prompt"] = prompt
        ids = encode(engine.tokenizer, prompt)
    else:
        body["messages"] = [{"role": "user", "content": prompt}]
        ids = None  # the chat template's rendering: matched by the request's rows below
    mine: list = []  # this request's rows, as the scheduler saw them
    ended: dict[int, tuple[str, int]] = {}  # row id -> (finish reason, tokens generated)
    started, release = threading.Event(), threading.Event()

    def note(row) -> bool:
        if row.params.max_tokens != MAX_TOKENS or (ids is not None and row.prompt_ids != ids):
            return False
        if all(row is not seen for seen in mine):
            mine.append(row)
        return True

    def observe(rows, logits) -> None:
        for row in rows:
            note(row)
        if mine and not started.is_set():
            started.set()
            release.wait(120)  # hold the engine still until the client has gone

    def record_finish(row, reason: str) -> None:
        if note(row):
            ended[id(row)] = (reason, len(row.generated))

    monkeypatch.setattr(scheduler, "observe_logits", observe)
    monkeypatch.setattr(scheduler, "observe_finish", record_finish)
    try:
        sock = raw_post(live_server, path, body)
        wait_for(started.is_set, "the request's rows started generating")
        sock.close()  # the client gives up before the answer is ready
        wait_for(
            lambda: all(row.handle.cancelled.is_set() for row in mine),
            "the server cancelled the rows of the request whose client left",
        )
    finally:
        release.set()
    wait_for(lambda: len(ended) == len(mine) == N, "every row of the request ended")
    for reason, generated in ended.values():
        assert reason == "cancelled"
        assert generated < MAX_TOKENS
    # The engine is free for the next client at once.
    monkeypatch.setattr(scheduler, "observe_logits", None)
    wait_for(lambda: not scheduler.rows, "the engine's rows emptied")


def test_a_request_asking_for_more_than_max_request_tokens_is_refused(client, monkeypatch):
    from app.settings import get_settings

    engine = client.app.state.engine
    monkeypatch.setattr(get_settings(), "max_request_tokens", 1000)
    forwards = engine.stats.forwards
    prompt = "The capital of France is"
    prompt_tokens = len(encode(engine.tokenizer, prompt))
    # 4 prompts x n=2 x (prompt + 130) is over 1000; each part alone is well within bounds.
    big = {"model": engine.name, "prompt": [prompt] * 4, "n": 2, "max_tokens": 130}
    assert 8 * (prompt_tokens + 130) > 1000
    r = client.post("/v1/completions", json=big)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "request_too_large"
    assert error["param"] == "max_tokens"
    assert error["type"] == "invalid_request_error"
    assert "1000" in error["message"]
    chat = {
        "model": engine.name,
        "messages": [{"role": "user", "content": prompt}],
        "n": 8,
        "max_tokens": 120,
    }
    r = client.post("/v1/chat/completions", json=chat)
    assert r.status_code == 400 and r.json()["error"]["code"] == "request_too_large", r.text
    assert engine.stats.forwards == forwards  # refused before any engine work
    # Within the bound, the same shapes are served.
    assert client.post("/v1/completions", json={**big, "max_tokens": 8}).status_code == 200
    r = client.post("/v1/chat/completions", json={**chat, "n": 2, "max_tokens": 8})
    assert r.status_code == 200, r.text
