"""Aliases: stable names over variants, weighted splits, atomic versioned repointing."""

import threading

import pytest

from tests.conftest import make_tenant_key
from tests.registry_util import register_random_adapter


def ask(client, model: str, **extra):
    return client.post(
        "/v1/chat/completions",
        json={
            "model": model,
            "max_tokens": 2,
            "temperature": 0,
            "messages": [{"role": "user", "content": "hello"}],
            **extra,
        },
    )


def test_alias_routes_and_reports_the_variant(client) -> None:
    base = client.app.state.engine.name
    ft = register_random_adapter("default", "a")
    r = client.post("/v1/aliases", json={"name": "sentiment", "targets": [{"model": base}]})
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1
    out = ask(client, "sentiment")
    assert out.status_code == 200
    assert out.json()["model"] == base
    assert out.headers["x-adaptd-variant"] == base
    assert out.headers["x-adaptd-alias"] == "sentiment"

    r = client.put("/v1/aliases/sentiment", json={"targets": [{"model": ft}]})
    assert r.json()["version"] == 2
    out = ask(client, "sentiment")
    assert out.json()["model"] == ft
    # The alias answers exactly what its target answers.
    assert out.json()["choices"] == ask(client, ft).json()["choices"]

    r = client.post("/v1/aliases/sentiment/rollback", json={})
    assert r.json()["version"] == 3
    assert r.json()["targets"] == [{"model": base, "weight": 1.0}]
    assert ask(client, "sentiment").json()["model"] == base
    history = client.get("/v1/aliases/sentiment/history").json()["data"]
    assert [h["version"] for h in history] == [1, 2, 3]
    assert [h["targets"][0]["model"] for h in history] == [base, ft, base]
    counts = client.get("/v1/aliases/sentiment").json()["requests"]
    assert counts == {base: 2, ft: 1}
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert "sentiment" in ids


def test_bad_alias_requests(client) -> None:
    base = client.app.state.engine.name
    cases = [
        ({"name": "x", "targets": [{"model": "ft:missing:a:b"}]}, 400, "targets.0.model"),
        ({"name": "x", "targets": []}, 400, "targets"),
        ({"name": "x", "targets": [{"model": base, "weight": 0}]}, 400, "targets.0.weight"),
        ({"name": "bad name", "targets": [{"model": base}]}, 400, "name"),
        ({"name": base, "targets": [{"model": base}]}, 400, "name"),
        ({"name": "tmpl:x", "targets": [{"model": base}]}, 400, "name"),
        ({"name": "x", "targets": [{"model": base}, {"model": base}]}, 400, "targets"),
    ]
    for body, status, param in cases:
        r = client.post("/v1/aliases", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["param"] == param, (body, r.json())
    assert (
        client.post("/v1/aliases", json={"name": "dup", "targets": [{"model": base}]}).status_code
        == 201
    )
    r = client.post("/v1/aliases", json={"name": "dup", "targets": [{"model": base}]})
    assert r.status_code == 409
    r = client.post("/v1/aliases", json={"name": "chain", "targets": [{"model": "dup"}]})
    assert r.status_code == 400
    r = client.post("/v1/aliases/dup/rollback", json={})
    assert r.status_code == 400 and r.json()["error"]["param"] == "version"
    assert client.get("/v1/aliases/nope").status_code == 404
    # A failed repoint leaves the alias as it was.
    r = client.put("/v1/aliases/dup", json={"targets": [{"model": "ft:gone:x:y"}]})
    assert r.status_code == 400
    assert client.get("/v1/aliases/dup").json()["version"] == 1


@pytest.mark.both_databases
def test_aliases_are_per_tenant(client) -> None:
    base = client.app.state.engine.name
    other = make_tenant_key(client, "other")
    hdr = {"Authorization": f"Bearer {other}"}
    assert (
        client.post("/v1/aliases", json={"name": "mine", "targets": [{"model": base}]}).status_code
        == 201
    )
    assert client.get("/v1/aliases/mine", headers=hdr).status_code == 404
    assert client.get("/v1/aliases", headers=hdr).json()["data"] == []
    assert (
        ask(
            client,
            "mine",
        ).status_code
        == 200
    )
    r = client.post(
        "/v1/chat/completions",
        headers=hdr,
        json={"model": "mine", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1},
    )
    assert r.status_code == 404
    assert client.delete("/v1/aliases/mine", headers=hdr).status_code == 404
    assert (
        client.put("/v1/aliases/mine", headers=hdr, json={"targets": [{"model": base}]}).status_code
        == 404
    )
    # Another tenant's adapter cannot be a target.
    theirs = register_random_adapter("other", "theirs")
    r = client.post("/v1/aliases", json={"name": "steal", "targets": [{"model": theirs}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_found"


def test_weighted_split_is_close_to_even(client) -> None:
    base = client.app.state.engine.name
    ft = register_random_adapter("default", "split")
    client.post(
        "/v1/aliases",
        json={"name": "ab", "targets": [{"model": base, "weight": 1}, {"model": ft, "weight": 1}]},
    )
    from app.aliases.service import pick_target
    from app.db import get_sessionmaker

    picks = []
    with get_sessionmaker()() as session:
        for _ in range(1000):
            picks.append(pick_target(session, "default", "ab"))
    share = picks.count(base) / 1000
    # Binomial(1000, 0.5) has sd 0.016: 0.44..0.56 is over 3.5 sd, so this fails only if biased.
    assert 0.44 <= share <= 0.56, share
    counts = client.get("/v1/aliases/ab").json()["requests"]
    assert counts[base] + counts[ft] == 1000


@pytest.mark.both_databases
def test_repoint_under_concurrent_traffic_loses_no_request(client) -> None:
    base = client.app.state.engine.name
    ft = register_random_adapter("default", "live")
    client.post("/v1/aliases", json={"name": "live", "targets": [{"model": base}]})
    statuses: list[int] = []
    models: list[str] = []

    def traffic() -> None:
        for _ in range(15):
            r = ask(client, "live")
            statuses.append(r.status_code)
            models.append(r.json().get("model"))

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(10):
        target = ft if i % 2 == 0 else base
        assert (
            client.put("/v1/aliases/live", json={"targets": [{"model": target}]}).status_code == 200
        )
    for t in threads:
        t.join()
    assert statuses == [200] * 60
    assert set(models) <= {base, ft}
    info = client.get("/v1/aliases/live").json()
    assert info["version"] == 11
    assert sum(info["requests"].values()) == 60


@pytest.mark.both_databases
def test_concurrent_repoints_each_get_their_own_version(client) -> None:
    base = client.app.state.engine.name
    ft = register_random_adapter("default", "race")
    client.post("/v1/aliases", json={"name": "race", "targets": [{"model": base}]})
    statuses: list[int] = []

    def repoint(i: int) -> None:
        target = ft if i % 2 else base
        r = client.put("/v1/aliases/race", json={"targets": [{"model": target}]})
        statuses.append(r.status_code)

    threads = [threading.Thread(target=repoint, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Each repoint lands as its own version, or is told to retry (409); never a 500.
    assert set(statuses) <= {200, 409}, statuses
    history = client.get("/v1/aliases/race/history").json()["data"]
    assert [h["version"] for h in history] == list(range(1, 2 + statuses.count(200)))


@pytest.mark.both_databases
def test_rollback_to_a_version_whose_target_was_deleted_is_refused(client) -> None:
    base = client.app.state.engine.name
    ft = register_random_adapter("default", "gone")
    client.post("/v1/aliases", json={"name": "rb", "targets": [{"model": ft}]})
    client.put("/v1/aliases/rb", json={"targets": [{"model": base}]})
    assert client.delete(f"/v1/models/{ft}").status_code == 200
    r = client.post("/v1/aliases/rb/rollback", json={"version": 1})
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "rollback_target_missing" and err["param"] == "version"
    assert ft in err["message"]
    # Nothing changed: the alias still serves its current version.
    assert client.get("/v1/aliases/rb").json()["version"] == 2
    assert ask(client, "rb").json()["model"] == base
    # A version whose targets all exist still rolls back.
    client.put("/v1/aliases/rb", json={"targets": [{"model": base, "weight": 2}]})
    assert client.post("/v1/aliases/rb/rollback", json={"version": 2}).status_code == 200


@pytest.mark.both_databases
def test_a_tag_an_alias_targets_cannot_be_deleted(client) -> None:
    client.post("/v1/templates", json={"name": "tt", "system_prompt": "s"})
    assert client.put("/v1/templates/tt/tags/prod", json={"version": 1}).status_code == 200
    client.put("/v1/templates/tt/tags/spare", json={"version": 1})
    client.post("/v1/aliases", json={"name": "live", "targets": [{"model": "tmpl:tt@prod"}]})
    r = client.delete("/v1/templates/tt/tags/prod")
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "tag_in_use" and "live" in err["message"]
    assert ask(client, "live").status_code == 200
    # Another tag of the same template is not held.
    assert client.delete("/v1/templates/tt/tags/spare").status_code == 204
    client.put("/v1/aliases/live", json={"targets": [{"model": "tmpl:tt@1"}]})
    assert client.delete("/v1/templates/tt/tags/prod").status_code == 204
