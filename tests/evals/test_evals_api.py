"""Evaluations API without a worker: what creating one holds on to, and what it refuses."""

import pytest

from app.db import get_sessionmaker
from app.evals.models import Evaluation
from tests.files.data import chat_rows, jsonl, upload


def _eval_file(client) -> str:
    r = upload(client, jsonl(chat_rows(4)), name="eval.jsonl", purpose="evals")
    assert r.status_code == 200, r.text
    return r.json()["id"]


def _set_status(eval_id: str, status: str) -> None:
    with get_sessionmaker()() as session:
        session.get(Evaluation, eval_id).status = status
        session.commit()


@pytest.mark.both_databases
def test_a_file_an_unfinished_evaluation_reads_cannot_be_deleted(client) -> None:
    base = client.app.state.engine.name
    file_id = _eval_file(client)
    ev = client.post("/v1/evals", json={"file_id": file_id, "variants": [base]}).json()
    assert ev["status"] == "queued"
    for status in ["queued", "running"]:
        _set_status(ev["id"], status)
        r = client.delete(f"/v1/files/{file_id}")
        assert r.status_code == 409, r.text
        err = r.json()["error"]
        assert err["code"] == "file_in_use" and ev["id"] in err["message"]
        assert client.get(f"/v1/files/{file_id}").status_code == 200
    _set_status(ev["id"], "succeeded")
    assert client.delete(f"/v1/files/{file_id}").status_code == 200
