"""Grammar compiles through the API: refused when too large or using keywords the grammar
would ignore, and a slow one neither holds up other requests nor outlives its client."""

import httpx
import pytest

from app.engine import grammar_process
from app.engine.grammar_rules import GrammarLimits
from tests.conftest import ADMIN_KEY
from tests.inference.test_abandoned_requests import raw_post, wait_for

SLOW = {"type": "string", "pattern": "[a-z]{1,20000}"}  # minutes to compile, 46 bytes


def chat(model: str, **fields) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    return {**body, **fields}


def schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


@pytest.mark.parametrize("endpoint", ["/v1/chat/completions", "/v1/completions"])
def test_too_large_and_unsupported_schemas_answer_400(client, endpoint: str) -> None:
    engine = client.app.state.engine
    body = chat(engine.name)
    if endpoint == "/v1/completions":
        body = {"model": engine.name, "prompt": "hi", "max_tokens": 4}
    forwards = engine.stats.forwards
    # The probe's shape: an anyOf of 2,000 objects (here 112 KB).
    alternatives = {
        "anyOf": [
            {"type": "object", "properties": {f"a{i}": {"type": "string"}}} for i in range(2000)
        ]
    }
    cases = [
        (
            {"response_format": schema_format(alternatives)},
            ("response_format_too_large", "response_format.json_schema.schema"),
        ),
        (
            {"structured_outputs": {"regex": "a" * (GrammarLimits().max_bytes + 1)}},
            ("response_format_too_large", "structured_outputs.regex"),
        ),
        (
            {"response_format": schema_format({"type": "integer", "not": {"const": 3}})},
            ("invalid_response_format", "response_format.json_schema.schema.not"),
        ),
        (
            {"structured_outputs": {"json": {"type": "string", "format": "color"}}},
            ("invalid_response_format", "structured_outputs.json.format"),
        ),
    ]
    for fields, expected in cases:
        r = client.post(endpoint, json={**body, **fields})
        assert r.status_code == 400, (fields, r.text)
        error = r.json()["error"]
        assert (error["code"], error["param"]) == expected
    assert engine.stats.forwards == forwards


def test_a_slow_compile_serves_others_and_stops_when_its_client_leaves(
    app, live_server, monkeypatch
) -> None:
    engine = app.state.engine
    grammars = engine.grammars
    # No deadline to speak of: only the client leaving ends this compile.
    monkeypatch.setattr(grammars, "limits", GrammarLimits(compile_timeout_s=3600))
    cancelled, compiles = grammars.stats.cancelled, grammars.stats.compiles
    sock = raw_post(
        live_server, "/v1/chat/completions", chat(engine.name, response_format=schema_format(SLOW))
    )
    try:
        wait_for(lambda: grammar_process.running(), "the slow schema's compile started")
        (pid,) = grammar_process.running()
        # Another request (its own new schema too) is answered while that compile runs.
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        with httpx.Client(base_url=live_server, headers=headers, timeout=600) as other:
            schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
            r = other.post("/v1/chat/completions", json=chat(engine.name))
            assert r.status_code == 200, r.text
            r = other.post(
                "/v1/chat/completions",
                json=chat(engine.name, response_format=schema_format(schema)),
            )
            assert r.status_code == 200, r.text
        assert pid in grammar_process.running()  # the slow compile is still going
    finally:
        sock.close()  # its client gives up
    wait_for(lambda: not grammar_process.running(), "the abandoned compile was stopped")
    assert grammars.stats.cancelled == cancelled + 1
    assert grammars.stats.compiles == compiles + 1  # the other request's schema only
