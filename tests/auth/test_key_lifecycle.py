"""Every key state against every route class, the tenant-admin / platform-admin boundary,
listing, revocation seen by another process, rotation and last-use tracking."""

import json
from datetime import timedelta

import pytest
from sqlalchemy import update

from app.auth.models import ApiKey
from app.db import get_sessionmaker, utcnow
from tests.conftest import ADMIN_KEY

# One route per class: inference (models, chat, completions), manage (templates, files,
# jobs, evaluations, aliases), admin (keys).
ROUTES = {
    "inference": ("GET", "/v1/models"),
    "manage": ("GET", "/v1/fine_tuning/jobs"),
    "admin": ("GET", "/v1/admin/keys"),
}
ALL_SCOPES = ["inference", "manage", "admin"]


def new_key(client, **body) -> dict:
    body.setdefault("tenant", "acme")
    r = client.post("/v1/admin/keys", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def statuses(client, key: str) -> dict[str, tuple[int, str | None]]:
    out = {}
    for scope, (method, url) in ROUTES.items():
        r = client.request(method, url, headers={"Authorization": f"Bearer {key}"})
        out[scope] = (r.status_code, None if r.status_code == 200 else r.json()["error"]["code"])
    return out


def set_columns(key_id: str, **values) -> None:
    with get_sessionmaker()() as s:
        s.execute(update(ApiKey).where(ApiKey.id == key_id).values(**values))
        s.commit()


OK = {scope: (200, None) for scope in ROUTES}


def every(code: str) -> dict:
    return {scope: (401, code) for scope in ROUTES}


def test_valid_key_reaches_every_route_class_its_scopes_allow(client) -> None:
    key = new_key(client, scopes=ALL_SCOPES)
    assert statuses(client, key["key"]) == OK


def test_revoked_key_is_refused_everywhere_at_once(client) -> None:
    key = new_key(client, scopes=ALL_SCOPES)
    assert statuses(client, key["key"]) == OK
    r = client.delete(f"/v1/admin/keys/{key['id']}")
    assert r.status_code == 200 and r.json() == {
        "id": key["id"],
        "object": "api_key",
        "deleted": True,
    }
    assert statuses(client, key["key"]) == every("invalid_api_key")
    # Idempotent; the key is listed as revoked only when asked for.
    assert client.delete(f"/v1/admin/keys/{key['id']}").status_code == 200
    ids = [k["id"] for k in client.get("/v1/admin/keys").json()["data"]]
    assert key["id"] not in ids
    listed = client.get("/v1/admin/keys", params={"include_revoked": True}).json()["data"]
    (row,) = [k for k in listed if k["id"] == key["id"]]
    assert row["status"] == "revoked" and row["revoked_at"] is not None


def test_expired_key_is_refused_everywhere(client) -> None:
    key = new_key(client, scopes=ALL_SCOPES, expires_at=int(utcnow().timestamp()) + 3600 * 24)
    assert statuses(client, key["key"]) == OK
    set_columns(key["id"], expires_at=utcnow() - timedelta(seconds=1))
    assert statuses(client, key["key"]) == every("expired_api_key")
    (row,) = [k for k in client.get("/v1/admin/keys").json()["data"] if k["id"] == key["id"]]
    assert row["status"] == "expired"


def test_expires_at_in_the_past_or_out_of_range_is_refused(client) -> None:
    for value in [1, 0, -5, 2**63, "soon"]:
        r = client.post("/v1/admin/keys", json={"tenant": "acme", "expires_at": value})
        assert r.status_code == 400, (value, r.text)
        assert r.json()["error"]["param"] == "expires_at"


def test_rotated_old_secret_works_during_grace_and_not_after(client) -> None:
    key = new_key(client, scopes=ALL_SCOPES)
    r = client.post(f"/v1/admin/keys/{key['id']}/rotate", json={"grace_period_s": 3600})
    assert r.status_code == 200, r.text
    rotated = r.json()
    assert rotated["id"] == key["id"] and rotated["key"] != key["key"]
    assert rotated["prefix"] == rotated["key"][:14] and rotated["previous_valid_until"]
    assert rotated["scopes"] == ALL_SCOPES and rotated["tenant"] == "acme"
    # In grace: both secrets work, as the same key.
    assert statuses(client, key["key"]) == OK
    assert statuses(client, rotated["key"]) == OK
    # After grace: only the new one.
    set_columns(key["id"], previous_valid_until=utcnow() - timedelta(seconds=1))
    assert statuses(client, key["key"]) == every("invalid_api_key")
    assert statuses(client, rotated["key"]) == OK


def test_rotation_without_grace_ends_the_old_secret_at_once(client) -> None:
    key = new_key(client)
    rotated = client.post(f"/v1/admin/keys/{key['id']}/rotate").json()
    h_old = {"Authorization": f"Bearer {key['key']}"}
    assert client.get("/v1/models", headers=h_old).status_code == 401
    h_new = {"Authorization": f"Bearer {rotated['key']}"}
    assert client.get("/v1/models", headers=h_new).status_code == 200
    # A second rotation ends the first one's grace too.
    r1 = client.post(f"/v1/admin/keys/{key['id']}/rotate", json={"grace_period_s": 60}).json()
    r2 = client.post(f"/v1/admin/keys/{key['id']}/rotate", json={"grace_period_s": 60}).json()
    assert (
        client.get("/v1/models", headers={"Authorization": f"Bearer {r1['key']}"}).status_code
        == 200
    )
    assert (
        client.get("/v1/models", headers={"Authorization": f"Bearer {rotated['key']}"}).status_code
        == 401
    )
    assert (
        client.get("/v1/models", headers={"Authorization": f"Bearer {r2['key']}"}).status_code
        == 200
    )


def test_rotating_bad_requests(client) -> None:
    key = new_key(client)
    for body in [{"grace_period_s": -1}, {"grace_period_s": 10**12}, {"grace": 5}]:
        r = client.post(f"/v1/admin/keys/{key['id']}/rotate", json=body)
        assert r.status_code == 400, body
    assert client.post("/v1/admin/keys/key_nope/rotate").status_code == 404
    client.delete(f"/v1/admin/keys/{key['id']}")
    r = client.post(f"/v1/admin/keys/{key['id']}/rotate")
    assert r.status_code == 409 and r.json()["error"]["code"] == "key_revoked"


@pytest.mark.parametrize(
    ("scopes", "expected"),
    [
        (
            ["inference"],
            {
                "inference": (200, None),
                "manage": (403, "insufficient_scope"),
                "admin": (403, "insufficient_scope"),
            },
        ),
        (
            ["manage"],
            {
                "inference": (403, "insufficient_scope"),
                "manage": (200, None),
                "admin": (403, "insufficient_scope"),
            },
        ),
        (
            ["admin"],
            {
                "inference": (403, "insufficient_scope"),
                "manage": (403, "insufficient_scope"),
                "admin": (200, None),
            },
        ),
    ],
)
def test_wrong_scope_is_403_naming_the_scope(client, scopes, expected) -> None:
    key = new_key(client, scopes=scopes)
    assert statuses(client, key["key"]) == expected
    h = {"Authorization": f"Bearer {key['key']}"}
    for scope, (method, url) in ROUTES.items():
        if scope in scopes:
            continue
        err = client.request(method, url, headers=h).json()["error"]
        assert err["type"] == "permission_error"
        assert f"'{scope}'" in err["message"] and err["details"] == {"required_scope": scope}


def test_inference_only_key_can_chat_but_not_upload(client) -> None:
    key = new_key(client, scopes=["inference"])
    h = {"Authorization": f"Bearer {key['key']}"}
    base = client.get("/v1/models", headers=h).json()["data"][0]["id"]
    r = client.post(
        "/v1/chat/completions",
        headers=h,
        json={"model": base, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 200
    r = client.post(
        "/v1/files", headers=h, files={"file": ("a.jsonl", b"{}")}, data={"purpose": "fine-tune"}
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    r = client.delete(f"/v1/models/ft:{base}:x:y", headers=h)
    assert r.status_code == 403 and "'manage'" in r.json()["error"]["message"]


def test_unknown_scope_is_refused(client) -> None:
    for scopes in [["root"], [], "admin", [1]]:
        r = client.post("/v1/admin/keys", json={"tenant": "acme", "scopes": scopes})
        assert r.status_code == 400, scopes
        assert r.json()["error"]["param"].startswith("scopes")


def test_every_v1_route_requires_exactly_one_scope(app) -> None:
    from fastapi.routing import APIRoute

    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.path.startswith("/v1"):
            continue
        scopes = [
            d.call.required_scope
            for d in route.dependant.dependencies
            if hasattr(d.call, "required_scope")
        ]
        assert len(scopes) == 1, (route.path, route.methods, scopes)


# --- tenant admins and the platform admin -------------------------------------------------


def test_tenant_admin_manages_only_its_own_tenant(client) -> None:
    a_admin = new_key(client, tenant="a", scopes=ALL_SCOPES)
    b_key = new_key(client, tenant="b")
    h = {"Authorization": f"Bearer {a_admin['key']}"}
    # Its own tenant: create (tenant implied or named), list, rotate, revoke.
    mine = client.post("/v1/admin/keys", headers=h, json={"name": "app"}).json()
    assert mine["tenant"] == "a" and mine["created_by"] == a_admin["id"]
    assert client.post("/v1/admin/keys", headers=h, json={"tenant": "a"}).status_code == 201
    listed = client.get("/v1/admin/keys", headers=h).json()["data"]
    assert {k["tenant"] for k in listed} == {"a"} and len(listed) == 3
    assert client.post(f"/v1/admin/keys/{mine['id']}/rotate", headers=h).status_code == 200
    assert client.delete(f"/v1/admin/keys/{mine['id']}", headers=h).status_code == 200
    # Other tenants: not creatable, not visible, not revocable, not rotatable.
    for tenant in ["b", "default"]:
        r = client.post("/v1/admin/keys", headers=h, json={"tenant": tenant, "scopes": ALL_SCOPES})
        assert r.status_code == 403 and r.json()["error"]["param"] == "tenant"
    assert client.get("/v1/admin/keys", headers=h, params={"tenant": "b"}).json()["data"] == []
    assert client.get(f"/v1/admin/keys/{b_key['id']}", headers=h).status_code == 404
    assert client.delete(f"/v1/admin/keys/{b_key['id']}", headers=h).status_code == 404
    assert client.post(f"/v1/admin/keys/{b_key['id']}/rotate", headers=h).status_code == 404
    assert (
        client.get("/v1/models", headers={"Authorization": f"Bearer {b_key['key']}"}).status_code
        == 200
    )
    # Nor can it mint a platform key for itself.
    r = client.post("/v1/admin/keys", headers=h, json={"platform": True, "scopes": ALL_SCOPES})
    assert r.status_code == 403 and r.json()["error"]["param"] == "platform"


def test_tenant_admin_cannot_read_another_tenants_data(client) -> None:
    a = {"Authorization": f"Bearer {new_key(client, tenant='a', scopes=ALL_SCOPES)['key']}"}
    b = {"Authorization": f"Bearer {new_key(client, tenant='b', scopes=ALL_SCOPES)['key']}"}
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    up = client.post(
        "/v1/files",
        headers=b,
        files={"file": ("b.jsonl", (json.dumps(row) + "\n").encode())},
        data={"purpose": "evals"},
    )
    assert up.status_code == 200, up.text
    b_file = up.json()["id"]
    base = client.app.state.engine.name
    client.post("/v1/aliases", headers=b, json={"name": "b-only", "targets": [{"model": base}]})
    # Tenant a's admin key sees none of it, by id or in lists, and cannot delete it.
    assert client.get(f"/v1/files/{b_file}", headers=a).status_code == 404
    assert client.get(f"/v1/files/{b_file}/content", headers=a).status_code == 404
    assert client.delete(f"/v1/files/{b_file}", headers=a).status_code == 404
    assert client.get("/v1/files", headers=a).json()["data"] == []
    assert client.get("/v1/aliases/b-only", headers=a).status_code == 404
    assert "b-only" not in {m["id"] for m in client.get("/v1/models", headers=a).json()["data"]}
    # Nor does a key it creates reach tenant b, whatever the body asks.
    made = client.post("/v1/admin/keys", headers=a, json={"scopes": ALL_SCOPES})
    assert made.status_code == 201 and made.json()["tenant"] == "a"
    c = {"Authorization": f"Bearer {made.json()['key']}"}
    assert client.get(f"/v1/files/{b_file}", headers=c).status_code == 404
    assert client.get(f"/v1/files/{b_file}", headers=b).status_code == 200


def test_platform_admin_reaches_every_tenant(client) -> None:
    platform = new_key(client, tenant="default", scopes=ALL_SCOPES, platform=True)
    h = {"Authorization": f"Bearer {platform['key']}"}
    b_key = client.post("/v1/admin/keys", headers=h, json={"tenant": "b"}).json()
    listed = client.get("/v1/admin/keys", headers=h, params={"tenant": "b"}).json()["data"]
    assert [k["id"] for k in listed] == [b_key["id"]]
    assert client.delete(f"/v1/admin/keys/{b_key['id']}", headers=h).status_code == 200
    # A platform key needs the admin scope.
    r = client.post("/v1/admin/keys", json={"platform": True, "scopes": ["inference"]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "scopes"


def test_bootstrap_key_keeps_working_and_cannot_be_revoked_through_the_api(client) -> None:
    listed = client.get("/v1/admin/keys", params={"tenant": "default"}).json()["data"]
    (boot,) = [k for k in listed if k["name"] == "bootstrap admin"]
    assert boot["platform"] and boot["scopes"] == ALL_SCOPES
    assert boot["prefix"] == ADMIN_KEY[:14]
    for r in [
        client.delete(f"/v1/admin/keys/{boot['id']}"),
        client.post(f"/v1/admin/keys/{boot['id']}/rotate"),
    ]:
        assert r.status_code == 409 and r.json()["error"]["code"] == "bootstrap_key"
    assert statuses(client, ADMIN_KEY) == OK


def test_a_new_bootstrap_key_revokes_the_old_one(client) -> None:
    from app.auth.service import ensure_admin_key

    with get_sessionmaker()() as s:
        ensure_admin_key(s, "sk-adaptd-next-bootstrap")
    assert statuses(client, ADMIN_KEY) == every("invalid_api_key")
    assert statuses(client, "sk-adaptd-next-bootstrap") == OK


def test_list_pages_and_never_shows_secrets(client) -> None:
    made = [new_key(client, name=f"k{i}") for i in range(5)]
    page = client.get("/v1/admin/keys", params={"tenant": "acme", "limit": 2}).json()
    assert page["has_more"] and [k["id"] for k in page["data"]] == [m["id"] for m in made[:2]]
    rest = client.get(
        "/v1/admin/keys", params={"tenant": "acme", "after": made[1]["id"], "limit": 10}
    ).json()
    assert not rest["has_more"] and [k["id"] for k in rest["data"]] == [m["id"] for m in made[2:]]
    text = client.get("/v1/admin/keys").text
    assert all(m["key"] not in text for m in made) and "key_hash" not in text
    assert client.get("/v1/admin/keys", params={"after": "key_nope"}).status_code == 404
    assert client.get("/v1/admin/keys", params={"limit": 0}).status_code == 400


def test_last_used_is_recorded_at_most_once_a_minute(client) -> None:
    key = new_key(client)
    assert key["last_used_at"] is None
    h = {"Authorization": f"Bearer {key['key']}"}

    def last_used():
        with get_sessionmaker()() as s:
            return s.get(ApiKey, key["id"]).last_used_at

    client.get("/v1/models", headers=h)
    first = last_used()
    assert first is not None
    client.get("/v1/models", headers=h)
    assert last_used() == first  # within the minute: no write
    set_columns(key["id"], last_used_at=first - timedelta(seconds=61))
    client.get("/v1/models", headers=h)
    assert last_used() > first - timedelta(seconds=61)
    (row,) = [k for k in client.get("/v1/admin/keys").json()["data"] if k["id"] == key["id"]]
    assert row["last_used_at"] is not None


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_revocation_holds_at_once_in_another_api_process(client) -> None:
    from tests.processes import ApiProcess

    key = new_key(client, scopes=ALL_SCOPES)
    api = ApiProcess()
    try:
        h = {"Authorization": f"Bearer {key['key']}"}
        assert api.http.get("/v1/models", headers=h).status_code == 200
        assert client.delete(f"/v1/admin/keys/{key['id']}").status_code == 200
        r = api.http.get("/v1/models", headers=h)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    finally:
        api.kill()


@pytest.mark.parametrize("tenant", ["default", "a"])
def test_tenant_admin_cannot_see_rotate_or_revoke_a_platform_key_of_its_tenant(
    client, tenant
) -> None:
    """A tenant admin holding a platform key's secret would reach every tenant: the key is out
    of its reach (404 as for another tenant's), and each attempt is in the audit trail."""
    platform = new_key(client, tenant=tenant, scopes=ALL_SCOPES, platform=True)
    admin = new_key(client, tenant=tenant, scopes=ALL_SCOPES)
    h = {"Authorization": f"Bearer {admin['key']}"}
    attempts = [
        ("rotate", client.post(f"/v1/admin/keys/{platform['id']}/rotate", headers=h)),
        (
            "rotate",
            client.post(
                f"/v1/admin/keys/{platform['id']}/rotate", headers=h, json={"grace_period_s": 600}
            ),
        ),
        ("revoke", client.delete(f"/v1/admin/keys/{platform['id']}", headers=h)),
        ("read", client.get(f"/v1/admin/keys/{platform['id']}", headers=h)),
        ("list", client.get("/v1/admin/keys", headers=h, params={"after": platform["id"]})),
    ]
    for _, r in attempts:
        assert r.status_code == 404 and r.json()["error"]["param"] == "key_id", r.text
    listed = client.get("/v1/admin/keys", headers=h, params={"include_revoked": True}).json()
    assert platform["id"] not in {k["id"] for k in listed["data"]}
    # The platform key is untouched: its secret still works and still reaches every tenant.
    p = {"Authorization": f"Bearer {platform['key']}"}
    assert client.get("/v1/admin/keys", headers=p, params={"tenant": "b"}).status_code == 200
    # Every refusal is audited, for the platform admin to see.
    events = client.get("/v1/admin/audit", params={"action": "key.denied", "limit": 100}).json()[
        "data"
    ]
    mine = [e for e in events if e["actor_key_id"] == admin["id"]]
    assert sorted(e["details"]["attempted"] for e in mine) == sorted(a for a, _ in attempts)
    assert {e["object_id"] for e in mine} == {platform["id"]}


def test_refused_cross_tenant_and_platform_creations_are_audited(client) -> None:
    admin = new_key(client, tenant="a", scopes=ALL_SCOPES)
    h = {"Authorization": f"Bearer {admin['key']}"}
    assert client.post("/v1/admin/keys", headers=h, json={"tenant": "b"}).status_code == 403
    r = client.post("/v1/admin/keys", headers=h, json={"platform": True, "scopes": ALL_SCOPES})
    assert r.status_code == 403
    events = client.get("/v1/admin/audit", params={"action": "key.denied", "limit": 100}).json()[
        "data"
    ]
    attempted = sorted(
        e["details"]["attempted"] for e in events if e["actor_key_id"] == admin["id"]
    )
    assert attempted == ["create", "create_platform"]
