"""Evaluation requests: unknown `generation` keys are refused by name, not ignored."""

import pytest

from tests.files.data import chat_rows, jsonl, upload


@pytest.mark.parametrize("key", ["max_token", "top_p", "temprature"])
def test_unknown_generation_keys_are_refused(client, key: str) -> None:
    file_id = upload(client, jsonl(chat_rows()), purpose="evals").json()["id"]
    base = client.app.state.engine.name
    body = {"file_id": file_id, "variants": [base], "generation": {"max_tokens": 4, key: 1}}
    r = client.post("/v1/evals", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == f"generation.{key}", error
    assert key in error["message"]
    assert client.get("/v1/evals").json()["data"] == []  # nothing stored
