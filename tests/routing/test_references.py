"""Who points at a model (app/routing/references.py): an adapter or a template that an alias
targets, or that an unfinished fine-tuning job trains on, cannot be deleted until nothing
points at it any more."""

import pytest

from tests.files.data import chat_rows, jsonl, upload
from tests.registry_util import register_random_adapter
from tests.templates.util import create, error_of


@pytest.mark.both_databases
def test_targets_in_use_cannot_be_deleted(client) -> None:
    ft = register_random_adapter("default", "used")
    client.post("/v1/templates", json={"name": "t", "system_prompt": "s"})
    client.post(
        "/v1/aliases", json={"name": "uses", "targets": [{"model": ft}, {"model": "tmpl:t"}]}
    )
    r = client.delete(f"/v1/models/{ft}")
    assert r.status_code == 409 and "uses" in r.json()["error"]["message"]
    assert client.delete("/v1/templates/t").status_code == 409
    client.put("/v1/aliases/uses", json={"targets": [{"model": client.app.state.engine.name}]})
    assert client.delete(f"/v1/models/{ft}").status_code in (200, 204)
    assert client.delete("/v1/templates/t").status_code == 204


@pytest.mark.both_databases
def test_delete_refused_while_an_alias_points_to_it(client) -> None:
    assert create(client).status_code == 201
    r = client.post(
        "/v1/aliases", json={"name": "prod", "targets": [{"model": "tmpl:sentiment@1"}]}
    )
    assert r.status_code == 201, r.text
    r = client.delete("/v1/templates/sentiment")
    assert r.status_code == 409
    assert "prod" in error_of(r)["message"]
    assert client.get("/v1/templates/sentiment").status_code == 200


@pytest.mark.both_databases
def test_an_adapter_an_unfinished_job_trains_on_cannot_be_deleted(client) -> None:
    ft = register_random_adapter("default", "parent")
    training = upload(client, jsonl(chat_rows(12))).json()["id"]
    job = client.post("/v1/fine_tuning/jobs", json={"model": ft, "training_file": training})
    assert job.status_code == 200, job.text
    r = client.delete(f"/v1/models/{ft}")
    assert r.status_code == 409 and job.json()["id"] in r.json()["error"]["message"]
    client.post(f"/v1/fine_tuning/jobs/{job.json()['id']}/cancel")
    assert client.delete(f"/v1/models/{ft}").status_code == 200
