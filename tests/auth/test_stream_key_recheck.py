"""A stream ends once its API key is revoked, expired or rotated out while it runs."""

import json
from datetime import timedelta

import pytest
from sqlalchemy import update

from app.auth.models import ApiKey
from app.db import get_sessionmaker, utcnow

MAX_TOKENS = 200


def _set(key_id: str, **values) -> None:
    with get_sessionmaker()() as s:
        s.execute(update(ApiKey).where(ApiKey.id == key_id).values(**values))
        s.commit()


CHANGES = {
    "revoked": lambda: {"revoked_at": utcnow()},
    "expired": lambda: {"expires_at": utcnow() - timedelta(seconds=1)},
    "rotated out": lambda: {"key_hash": "0" * 64, "previous_key_hash": None},
}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("change", list(CHANGES))
def test_stream_stops_with_an_error_once_its_key_is_no_longer_good(
    client, settings_env, monkeypatch, path, change
) -> None:
    monkeypatch.setattr(settings_env, "stream_key_recheck_s", 0.0)
    made = client.post("/v1/admin/keys", json={"tenant": "acme"}).json()
    engine = client.app.state.engine
    body: dict = {
        "model": engine.name,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
        # eos pushed away, so only the token budget or the key's end stops the stream
        "logit_bias": {str(t): -100 for t in engine.eos_ids},
    }
    if path == "/v1/completions":
        body["prompt"] = "Once upon a time"
    else:
        body["messages"] = [{"role": "user", "content": "Tell me a story."}]
    events = []
    with client.stream(
        "POST", path, json=body, headers={"Authorization": f"Bearer {made['key']}"}
    ) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line:
                continue
            events.append(line)
            if len(events) == 3:
                _set(made["id"], **CHANGES[change]())
    data = [json.loads(e.removeprefix("data: ")) for e in events if e != "data: [DONE]"]
    assert "error" in data[-1], events[-3:]
    assert data[-1]["error"]["code"] in {"invalid_api_key", "expired_api_key"}
    assert len(data) < MAX_TOKENS // 2  # stopped soon after, not at the token budget


def test_a_stream_whose_key_stays_good_runs_to_its_end(client, settings_env, monkeypatch) -> None:
    monkeypatch.setattr(settings_env, "stream_key_recheck_s", 0.0)
    engine = client.app.state.engine
    body = {
        "model": engine.name,
        "max_tokens": 20,
        "temperature": 0,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
        "logit_bias": {str(t): -100 for t in engine.eos_ids},
    }
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert not any('"error"' in line for line in lines)
