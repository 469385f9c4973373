"""The audit trail after each audited action: keys (create, rotate, revoke), templates,
adapters and aliases (create, repoint, delete); newest first, paginated; a tenant admin
reads its own tenant's only; a refused action leaves no row."""

from tests.conftest import make_tenant_key
from tests.registry_util import register_random_adapter


def events(client, **params) -> list[dict]:
    r = client.get("/v1/admin/audit", params={"limit": 100, **params})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def latest(client) -> dict:
    return events(client, limit=1)[0]


def bootstrap_id(client) -> str:
    keys = client.get("/v1/admin/keys", params={"tenant": "default"}).json()["data"]
    return next(k["id"] for k in keys if k["name"] == "bootstrap admin")


def test_each_audited_action_is_recorded_with_actor_and_request(client) -> None:
    me = bootstrap_id(client)
    base = client.app.state.engine.name

    def check(action: str, object_id: str, tenant: str = "default", rid: str | None = None):
        e = latest(client)
        assert (e["action"], e["object_id"], e["tenant"]) == (action, object_id, tenant), e
        assert e["actor_key_id"] == me
        if rid is not None:
            assert e["request_id"] == rid
        return e

    r = client.post(
        "/v1/admin/keys", json={"tenant": "acme", "name": "app"}, headers={"X-Request-ID": "aud-1"}
    )
    key = r.json()
    e = check("key.create", key["id"], "acme", "aud-1")
    assert e["details"] == {"name": "app", "scopes": ["inference", "manage"]}
    assert key["key"] not in str(e)
    client.post(f"/v1/admin/keys/{key['id']}/rotate", json={"grace_period_s": 60})
    check("key.rotate", key["id"], "acme")
    client.delete(f"/v1/admin/keys/{key['id']}", headers={"X-Request-ID": "aud-2"})
    check("key.revoke", key["id"], "acme", "aud-2")
    client.delete(f"/v1/admin/keys/{key['id']}")  # already revoked: nothing new
    assert (
        latest(client)["action"] == "key.revoke" and len(events(client, action="key.revoke")) == 1
    )

    assert client.post("/v1/templates", json={"name": "t", "system_prompt": "s"}).status_code == 201
    check("template.create", "t")
    assert (
        client.post("/v1/aliases", json={"name": "al", "targets": [{"model": base}]}).status_code
        == 201
    )
    check("alias.create", "al")
    r = client.put("/v1/aliases/al", json={"targets": [{"model": "tmpl:t"}]})
    assert r.status_code == 200, r.text
    e = check("alias.repoint", "al")
    assert e["details"]["version"] == 2 and e["details"]["targets"][0]["model"] == "tmpl:t"
    # Refused: the template is in use. No row.
    n = len(events(client))
    assert client.delete("/v1/templates/t").status_code == 409
    assert len(events(client)) == n
    assert client.delete("/v1/aliases/al").status_code == 204
    check("alias.delete", "al")
    assert client.delete("/v1/templates/t").status_code == 204
    check("template.delete", "t")

    adapter = register_random_adapter("default", "aud")  # as a worker registers it
    e = latest(client)
    assert (e["action"], e["object_id"], e["actor_key_id"]) == ("adapter.create", adapter, None)
    assert client.delete(f"/v1/models/{adapter}").status_code == 200
    check("adapter.delete", adapter)

    actions = [e["action"] for e in events(client)]
    assert actions == [
        "adapter.delete",
        "adapter.create",
        "template.delete",
        "alias.delete",
        "alias.repoint",
        "alias.create",
        "template.create",
        "key.revoke",
        "key.rotate",
        "key.create",
        "key.create",  # the bootstrap key, registered at startup by no one
    ]
    assert events(client)[-1]["actor_key_id"] is None


def test_pages_newest_first(client) -> None:
    for i in range(5):
        client.post("/v1/admin/keys", json={"tenant": "acme", "name": f"k{i}"})
    first = client.get("/v1/admin/audit", params={"limit": 2, "tenant": "acme"}).json()
    assert first["has_more"] and [e["details"]["name"] for e in first["data"]] == ["k4", "k3"]
    rest = client.get(
        "/v1/admin/audit", params={"limit": 10, "tenant": "acme", "after": first["data"][-1]["id"]}
    )
    names = [e["details"]["name"] for e in rest.json()["data"]]
    assert names == ["k2", "k1", "k0"] and not rest.json()["has_more"]
    for bad in [{"limit": 0}, {"after": 0}, {"after": 2**63}, {"after": "x"}]:
        assert client.get("/v1/admin/audit", params=bad).status_code == 400, bad


def test_tenant_admin_reads_only_its_own_tenant(client) -> None:
    client.post("/v1/admin/keys", json={"tenant": "other", "name": "theirs"})
    admin = client.post(
        "/v1/admin/keys", json={"tenant": "mine", "scopes": ["admin", "manage"]}
    ).json()
    h = {"Authorization": f"Bearer {admin['key']}"}
    assert (
        client.post(
            "/v1/templates", headers=h, json={"name": "x", "system_prompt": "s"}
        ).status_code
        == 201
    )
    seen = client.get("/v1/admin/audit", headers=h).json()["data"]
    assert {e["tenant"] for e in seen} == {"mine"}
    assert [e["action"] for e in seen] == ["template.create", "key.create"]
    assert seen[0]["actor_key_id"] == admin["id"]
    assert client.get("/v1/admin/audit", headers=h, params={"tenant": "other"}).json()["data"] == []
    plain = make_tenant_key(client, "mine")
    r = client.get("/v1/admin/audit", headers={"Authorization": f"Bearer {plain}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
