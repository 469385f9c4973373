"""Starting a fine-tuning job through the API, as the worker tests do."""

from fastapi.testclient import TestClient
from httpx import Response

from tests.files.data import chat_rows, jsonl


def create_job(
    client: TestClient, hyperparameters: dict, headers: dict[str, str] | None = None
) -> Response:
    """Upload twelve chat rows and create a supervised job on the served model with them."""
    file_id = client.post(
        "/v1/files",
        files={"file": ("a.jsonl", jsonl(chat_rows(12)))},
        data={"purpose": "fine-tune"},
    ).json()["id"]
    r = client.post(
        "/v1/fine_tuning/jobs",
        headers=headers or {},
        json={
            "model": client.app.state.engine.name,
            "training_file": file_id,
            "hyperparameters": hyperparameters,
        },
    )
    assert r.status_code in (200, 201), r.text
    return r
