"""Bodies the framework refuses before our code sees them still get a specific `code`."""

import pytest


def _chunks(data: bytes, size: int = 64 * 1024):
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/admin/keys"])
def test_oversize_chunked_body_is_413_payload_too_large(client, settings_env, path) -> None:
    body = b'{"model": "x", "padding": "' + b"a" * (settings_env.max_body_bytes + 10) + b'"}'
    r = client.post(path, content=_chunks(body), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("depth", [5_000, 100_000])
@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_very_deep_json_is_400_with_a_code(client, depth, opener) -> None:
    closer = "]" if opener == "[" else "}"
    body = opener * depth + "1" + closer * depth
    r = client.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_json" and error["type"] == "invalid_request_error"
