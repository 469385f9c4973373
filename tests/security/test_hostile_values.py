"""Values that used to come back as a 500 (issue 17), past the protocol edge's own rules
(those are tests/protocol/test_edge_values.py): a JSONL line with a lone UTF-16 surrogate or
nested 50,000 levels deep is a 400 naming the line, and any error nobody foresaw is the OpenAI
envelope on a connection that stays usable."""

import http.client
import json
from urllib.parse import urlsplit

from tests.conftest import ADMIN_KEY
from tests.files.data import chat_rows, jsonl, upload
from tests.protocol.test_edge_values import LONE, assert_error


# -- lone surrogates in uploaded files -----------------------------------------------------
def test_jsonl_with_a_lone_surrogate_is_refused_on_upload(client) -> None:
    rows = chat_rows()
    rows[3]["messages"][0]["content"] = "hello " + LONE
    r = upload(client, jsonl(rows))  # json.dumps writes the surrogate as \ud800
    assert r.status_code == 400, r.text
    problems = r.json()["error"]["details"]
    assert problems[0]["line"] == 4 and problems[0]["code"] == "invalid_encoding", problems


def test_jsonl_line_nested_50000_levels_is_refused_on_upload(client) -> None:
    deep = "[" * 50_000 + "]" * 50_000
    data = jsonl(chat_rows()) + ('{"messages": ' + deep + "}\n").encode()
    r = upload(client, data)
    assert r.status_code == 400, r.text
    problems = r.json()["error"]["details"]
    assert problems[0]["line"] == 13 and problems[0]["code"] == "invalid_json", problems
    assert "nested" in problems[0]["message"]
    # Deep but reasonable nesting in a line is not refused for its depth.
    fine = chat_rows()
    fine[0]["extra"] = [[[[[["x"]]]]]]
    assert upload(client, jsonl(fine)).status_code == 200


# -- the last resort -------------------------------------------------------------------------
def _add_failing_route(app) -> None:
    def fail() -> None:
        raise RuntimeError("a bug nobody foresaw")

    app.add_api_route("/v1/test-only/fail", fail, methods=["GET"])


def test_an_unexpected_error_is_the_openai_envelope(app, client) -> None:
    _add_failing_route(app)
    r = client.get("/v1/test-only/fail")  # TestClient re-raises whatever the app re-raises
    error = assert_error(r, 500, code="internal_error")
    assert error["type"] == "server_error" and "a bug" not in error["message"]
    assert r.headers.get("x-request-id")
    assert client.get("/v1/models").status_code == 200


def test_the_connection_stays_usable_after_an_unexpected_error(app, live_server) -> None:
    _add_failing_route(app)
    url = urlsplit(live_server)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    try:
        conn.request("GET", "/v1/test-only/fail", headers=headers)
        first = conn.getresponse()
        body = json.loads(first.read())
        assert first.status == 500 and body["error"]["type"] == "server_error", body
        sock = conn.sock
        assert sock is not None  # not marked to close
        conn.request("GET", "/v1/models", headers=headers)  # same keep-alive connection
        second = conn.getresponse()
        assert second.status == 200, second.read()
        second.read()
        assert conn.sock is sock
    finally:
        conn.close()
