"""X-Request-ID in and out, and exactly one JSON line per request with the request's id,
tenant, route, status, latency, variant and tokens, and never a prompt, an answer or a key."""

import json
import re

from tests.conftest import make_tenant_key

SECRET_PROMPT = "PANGOLIN-PROMPT-4417"


def test_request_id_is_echoed_or_made_up(client) -> None:
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123.x:y"})
    assert r.headers["x-request-id"] == "abc-123.x:y"
    made = {client.get("/healthz").headers["x-request-id"] for _ in range(3)}
    assert len(made) == 3 and all(re.fullmatch(r"[0-9a-f]{32}", m) for m in made)
    # An id that could forge log lines or is too long is replaced, not echoed.
    for bad in ["a b", 'x"}{"status":200', "a" * 129]:
        got = client.get("/healthz", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert got != bad and re.fullmatch(r"[0-9a-f]{32}", got)
    # Errors carry it too.
    r = client.get("/v1/models", headers={"Authorization": "", "X-Request-ID": "e-1"})
    assert r.status_code == 401 and r.headers["x-request-id"] == "e-1"


def test_one_json_line_per_request_without_text_or_keys(client, request_lines) -> None:
    key = make_tenant_key(client, "loggy")
    h = {"Authorization": f"Bearer {key}"}
    base = client.app.state.engine.name
    request_lines.raw.clear()
    messages = [{"role": "user", "content": SECRET_PROMPT}]
    plain = client.post(
        "/v1/chat/completions",
        headers={**h, "X-Request-ID": "chat-1"},
        json={"model": base, "max_tokens": 5, "messages": messages},
    )
    assert plain.status_code == 200
    with client.stream(
        "POST",
        "/v1/completions",
        headers={**h, "X-Request-ID": "stream-1"},
        json={"model": base, "max_tokens": 4, "prompt": SECRET_PROMPT, "stream": True},
    ) as r:
        assert r.headers["x-request-id"] == "stream-1"
        body = "".join(r.iter_text())
    missing = client.post(
        "/v1/chat/completions",
        headers={**h, "X-Request-ID": "bad-1"},
        json={"model": "nope", "messages": messages},
    )
    assert missing.status_code == 404
    lines = request_lines.parsed()
    assert [line["request_id"] for line in lines] == ["chat-1", "stream-1", "bad-1"]
    chat, stream, bad = lines
    usage = plain.json()["usage"]
    assert chat["route"] == "/v1/chat/completions" and chat["status"] == 200
    assert chat["tenant"] == "loggy" and chat["method"] == "POST"
    assert chat["variant"] == base and chat["variant_kind"] == "base"
    assert chat["prompt_tokens"] == usage["prompt_tokens"]
    assert chat["completion_tokens"] == usage["completion_tokens"]
    assert chat["latency_ms"] >= chat["ttft_ms"] > 0
    assert stream["route"] == "/v1/completions" and stream["status"] == 200
    assert stream["completion_tokens"] >= 1 and stream["ttft_ms"] is not None
    assert bad["status"] == 404 and "variant" not in bad
    answer = plain.json()["choices"][0]["message"]["content"]
    text = "\n".join(request_lines.raw)
    assert SECRET_PROMPT not in text and key not in text
    assert (not answer.strip()) or answer not in text
    assert all(json.loads(line) for line in request_lines.raw)
    assert "data:" in body


def test_route_is_the_template_not_the_path(client, request_lines) -> None:
    client.get("/v1/files/file-abc")
    client.get("/no/such/thing")
    # Console pages are included under /console, and their lines say so.
    client.get("/console/jobs/ftjob-abc", headers={"accept": "text/html"}, follow_redirects=False)
    client.get("/console/login")
    routes = [line["route"] for line in request_lines.parsed()]
    assert routes == [
        "/v1/files/{file_id}",
        "unmatched",
        "/console/jobs/{job_id}",
        "/console/login",
    ]
