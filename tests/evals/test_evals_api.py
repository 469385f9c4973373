"""Evaluations API without a worker: what creating one holds on to, and what it refuses."""

import pytest

from app.db import get_sessionmaker
from app.evals.models import Evaluation
from tests.files.data import chat_rows, jsonl, upload
from tests.registry_util import register_random_adapter


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


def test_a_weighted_alias_is_resolved_per_example_and_reports_each_pick(client) -> None:
    from workers.eval_runner import run

    engine = client.app.state.engine
    base = engine.name
    client.post("/v1/templates", json={"name": "brief", "system_prompt": "Answer in one word."})
    targets = [{"model": base, "weight": 1}, {"model": "tmpl:brief", "weight": 1}]
    assert client.post("/v1/aliases", json={"name": "split", "targets": targets}).status_code == 201
    rows = chat_rows(24)
    file_id = upload(client, jsonl(rows), name="e.jsonl", purpose="evals").json()["id"]
    body = {
        "file_id": file_id,
        "variants": ["split", base, "tmpl:brief"],
        "generation": {"max_tokens": 4},
    }
    ev = client.post("/v1/evals", json=body).json()
    run(ev["id"], engine)  # the worker's code, in this process, on the test's engine
    done = client.get(f"/v1/evals/{ev['id']}").json()
    assert done["status"] == "succeeded", done
    report = done["report"]
    picks = [ex["answers"]["split"]["model"] for ex in report["examples"]]
    assert set(picks) == {base, "tmpl:brief"}  # both answered (24 fair picks)
    for ex, model in zip(report["examples"], picks, strict=True):
        # Each answer is exactly what the picked variant answers on that example.
        assert ex["answers"]["split"]["answer"] == ex["answers"][model]["answer"]
        assert "model" not in ex["answers"][base]  # concrete variants need no label
    by_target = report["variants"]["split"]["targets"]
    assert {m: t["n"] for m, t in by_target.items()} == {m: picks.count(m) for m in set(picks)}
    # Counting evaluation traffic would distort the alias's live split.
    assert client.get("/v1/aliases/split").json()["requests"] == {}


@pytest.mark.both_databases
def test_what_an_unfinished_evaluation_names_cannot_be_deleted(client) -> None:
    base = client.app.state.engine.name
    ft = register_random_adapter("default", "evald")
    client.post("/v1/templates", json={"name": "tp", "system_prompt": "s"})
    client.put("/v1/templates/tp/tags/prod", json={"version": 1})
    client.post("/v1/aliases", json={"name": "al", "targets": [{"model": base}]})
    body = {"file_id": _eval_file(client), "variants": [ft, "tmpl:tp@prod", "al"]}
    ev = client.post("/v1/evals", json=body).json()
    deletes = [
        f"/v1/models/{ft}",
        "/v1/templates/tp/tags/prod",
        "/v1/templates/tp",
        "/v1/aliases/al",
    ]
    for url in deletes:
        r = client.delete(url)
        assert r.status_code == 409, (url, r.text)
        assert ev["id"] in r.json()["error"]["message"], url
    assert client.get("/v1/aliases/al").status_code == 200
    _set_status(ev["id"], "failed")
    for url in deletes:
        assert client.delete(url).status_code in (200, 204), url
