from sqlalchemy import select

from app.auth.models import ApiKey
from app.auth.service import hash_key
from app.db import get_sessionmaker
from tests.conftest import make_tenant_key


def test_missing_and_wrong_keys_are_401(client) -> None:
    r = client.get("/v1/models", headers={"Authorization": ""})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "missing_api_key"
    r = client.get("/v1/models", headers={"Authorization": "Bearer sk-nope"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
    r = client.get("/v1/models", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401


def test_admin_creates_tenant_key_that_works_and_is_stored_hashed(client) -> None:
    key = make_tenant_key(client, "acme")
    r = client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200
    with get_sessionmaker()() as s:
        rows = s.scalars(select(ApiKey)).all()
        assert all(key not in (row.key_hash, row.prefix, row.name) for row in rows)
        assert any(row.key_hash == hash_key(key) and row.tenant == "acme" for row in rows)


def test_tenant_key_cannot_create_keys(client, tenant_key: str) -> None:
    r = client.post(
        "/v1/admin/keys", json={"tenant": "evil"}, headers={"Authorization": f"Bearer {tenant_key}"}
    )
    assert r.status_code == 403
    assert r.json()["error"]["type"] == "permission_error"


def test_bad_tenant_names_are_refused(client) -> None:
    for tenant in ["", "a b", "x/../y", "t" * 65]:
        r = client.post("/v1/admin/keys", json={"tenant": tenant})
        assert r.status_code == 400, tenant
        assert r.json()["error"]["param"] == "tenant"
