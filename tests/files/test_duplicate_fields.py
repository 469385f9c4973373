"""A multipart upload that sends a field twice is refused, not silently last-wins."""

import pytest

from tests.files.data import chat_rows, jsonl


@pytest.mark.parametrize(
    ("files", "data", "param"),
    [
        (
            [("file", ("a.jsonl", jsonl(chat_rows()))), ("file", ("b.jsonl", jsonl(chat_rows())))],
            {"purpose": "fine-tune"},
            "file",
        ),
        (
            [("file", ("a.jsonl", jsonl(chat_rows())))],
            {"purpose": ["evals", "fine-tune"]},
            "purpose",
        ),
    ],
)
def test_duplicate_multipart_fields_are_refused(client, files, data, param: str) -> None:
    r = client.post("/v1/files", files=files, data=data)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["code"] == "duplicate_field", error
    assert "2 times" in error["message"]
    assert client.get("/v1/files").json()["data"] == []  # nothing stored
