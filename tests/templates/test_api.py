"""Templates API: create, read, list, versions, tags, delete, tenancy."""

import pytest

from tests.conftest import make_tenant_key
from tests.registry_util import register_random_adapter
from tests.templates.util import SENTIMENT, create, error_of


def test_create_and_get(client) -> None:
    r = create(client)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["object"] == "template"
    assert body["name"] == "sentiment"
    assert body["latest_version"] == 1 and body["versions"] == [1]
    assert body["tags"] == {}
    latest = body["latest"]
    assert latest["model"] == client.app.state.engine.name  # the base model by default
    assert latest["examples"] == SENTIMENT["examples"]
    assert latest["example_selection"] == {"rule": "all", "k": None}
    assert latest["params"]["temperature"] == 0 and latest["params"]["max_tokens"] == 8

    got = client.get("/v1/templates/sentiment")
    assert got.status_code == 200
    assert got.json() == body
    v1 = client.get("/v1/templates/sentiment/versions/1")
    assert v1.status_code == 200 and v1.json()["instruction"] == SENTIMENT["instruction"]
    assert client.get("/v1/templates/sentiment/versions/2").status_code == 404
    assert client.get("/v1/templates/nope").status_code == 404


def test_duplicate_name_is_409_and_bad_name_400(client) -> None:
    assert create(client).status_code == 201
    r = create(client)
    assert r.status_code == 409
    assert "already exists" in error_of(r)["message"]
    for bad in ("has space", "slash/name", "at@sign", "tmpl:x", "", "-lead"):
        r = create(client, name=bad)
        assert r.status_code == 400, bad
        assert error_of(r)["param"] == "name"


def test_versions_are_immutable_and_patch_carries_fields(client) -> None:
    assert create(client).status_code == 201
    r = client.post("/v1/templates/sentiment/versions", json={"instruction": "Text: {{ input }}"})
    assert r.status_code == 201, r.text
    v2 = r.json()
    assert v2["version"] == 2
    assert v2["instruction"] == "Text: {{ input }}"
    assert v2["examples"] == SENTIMENT["examples"]  # carried over from version 1
    assert v2["system_prompt"] == SENTIMENT["system_prompt"]
    old = client.get("/v1/templates/sentiment/versions/1").json()
    assert old["instruction"] == SENTIMENT["instruction"]  # version 1 unchanged
    body = client.get("/v1/templates/sentiment").json()
    assert body["latest_version"] == 2 and body["versions"] == [1, 2]
    assert body["latest"]["version"] == 2
    listed = client.get("/v1/templates/sentiment/versions").json()["data"]
    assert [v["version"] for v in listed] == [1, 2]
    # A bad update writes nothing.
    bad = client.post("/v1/templates/sentiment/versions", json={"instruction": "{{ input "})
    assert bad.status_code == 400
    assert client.get("/v1/templates/sentiment").json()["versions"] == [1, 2]


@pytest.mark.both_databases
def test_tags_move_and_resolve(client) -> None:
    assert create(client).status_code == 201
    client.post("/v1/templates/sentiment/versions", json={"system_prompt": "Be brief."})
    r = client.put("/v1/templates/sentiment/tags/production", json={"version": 1})
    assert r.status_code == 200, r.text
    assert r.json()["tags"] == {"production": 1}

    def rendered_system(ref: str) -> str:
        out = client.post(f"/v1/templates/{ref}/render", json={"input": "x"})
        assert out.status_code == 200, out.text
        assert out.json()["model"].startswith("tmpl:sentiment@")
        return out.json()["messages"][0]["content"]

    assert rendered_system("sentiment@production") == "Classify the sentiment."
    assert rendered_system("sentiment") == "Be brief."
    assert rendered_system("sentiment@latest") == "Be brief."
    assert rendered_system("sentiment@1") == "Classify the sentiment."

    r = client.put("/v1/templates/sentiment/tags/production", json={"version": 2})
    assert r.json()["tags"] == {"production": 2}
    assert rendered_system("sentiment@production") == "Be brief."

    assert (
        client.put("/v1/templates/sentiment/tags/production", json={"version": 9}).status_code
        == 404
    )
    for bad in ("3", "latest", "-x"):
        r = client.put(f"/v1/templates/sentiment/tags/{bad}", json={"version": 1})
        assert r.status_code == 400, bad
        assert error_of(r)["code"] == "invalid_tag"
    assert (
        client.post("/v1/templates/sentiment@nope/render", json={"input": "x"}).status_code == 404
    )
    assert client.delete("/v1/templates/sentiment/tags/production").status_code == 204
    assert client.delete("/v1/templates/sentiment/tags/production").status_code == 404
    assert client.get("/v1/templates/sentiment").json()["tags"] == {}


@pytest.mark.both_databases
def test_list_is_paginated(client) -> None:
    for name in ("c-tmpl", "a-tmpl", "b-tmpl"):
        assert create(client, name=name).status_code == 201
    page = client.get("/v1/templates", params={"limit": 2}).json()
    assert page["object"] == "list"
    assert [t["name"] for t in page["data"]] == ["a-tmpl", "b-tmpl"]
    assert page["has_more"] is True
    assert page["last_id"] == "b-tmpl"
    rest = client.get("/v1/templates", params={"limit": 2, "after": page["last_id"]}).json()
    assert [t["name"] for t in rest["data"]] == ["c-tmpl"]
    assert rest["has_more"] is False
    assert rest["data"][0]["latest_version"] == 1
    assert client.get("/v1/templates", params={"limit": 0}).status_code == 400
    models = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert "tmpl:a-tmpl" in models


def test_delete(client) -> None:
    assert create(client).status_code == 201
    client.put("/v1/templates/sentiment/tags/production", json={"version": 1})
    assert client.delete("/v1/templates/sentiment").status_code == 204
    assert client.get("/v1/templates/sentiment").status_code == 404
    assert client.delete("/v1/templates/sentiment").status_code == 404
    # The name is free again, starting over at version 1.
    r = create(client)
    assert r.status_code == 201 and r.json()["latest_version"] == 1


@pytest.mark.both_databases
def test_other_tenants_see_404(client) -> None:
    assert create(client).status_code == 201
    other = {"Authorization": f"Bearer {make_tenant_key(client, 'other')}"}
    assert client.get("/v1/templates/sentiment", headers=other).status_code == 404
    assert client.get("/v1/templates", headers=other).json()["data"] == []
    assert client.delete("/v1/templates/sentiment", headers=other).status_code == 404
    r = client.post("/v1/templates/sentiment/render", json={"input": "x"}, headers=other)
    assert r.status_code == 404
    r = client.post(
        "/v1/chat/completions",
        headers=other,
        json={"model": "tmpl:sentiment", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 404
    # The same name is free in the other tenant.
    assert client.post("/v1/templates", json=SENTIMENT, headers=other).status_code == 201


def test_model_may_be_an_adapter_of_the_tenant(client) -> None:
    ft = register_random_adapter("default", "tmpl")
    r = create(client, model=ft)
    assert r.status_code == 201, r.text
    assert r.json()["latest"]["model"] == ft
    r = create(client, name="missing-ft", model="ft:nothing:x:y")
    assert r.status_code == 400
    assert error_of(r)["param"] == "model"
    assert create(client, name="on-tmpl", model="tmpl:sentiment").status_code == 400
    # Another tenant's adapter is unknown here.
    other = {"Authorization": f"Bearer {make_tenant_key(client, 'other')}"}
    r = client.post("/v1/templates", json={**SENTIMENT, "model": ft}, headers=other)
    assert r.status_code == 400 and error_of(r)["code"] == "model_not_found"


@pytest.mark.both_databases
def test_concurrent_updates_get_distinct_versions(client) -> None:
    import threading

    assert create(client).status_code == 201
    statuses: list[int] = []

    def update(i: int) -> None:
        for j in range(3):
            r = client.post(
                "/v1/templates/sentiment/versions", json={"system_prompt": f"writer {i} {j}"}
            )
            statuses.append(r.status_code)

    threads = [threading.Thread(target=update, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses.count(201) + statuses.count(409) == 12
    body = client.get("/v1/templates/sentiment").json()
    created = statuses.count(201)
    assert body["versions"] == list(range(1, created + 2))
    assert body["latest_version"] == created + 1
    prompts = {
        v["system_prompt"] for v in client.get("/v1/templates/sentiment/versions").json()["data"]
    }
    assert len(prompts) == created + 1  # every version holds what its writer sent
