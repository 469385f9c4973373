"""The session cookie: tampered, expired, or of a revoked key, it signs nobody in."""

import json
import time

import pytest
from fastapi.testclient import TestClient

from app.console import session as console_session
from tests.conftest import ADMIN_KEY


def _sign_in(client: TestClient, key: str) -> None:
    form = client.get("/console/login").text
    token = form.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    r = client.post(
        "/console/login", data={"api_key": key, "csrf_token": token}, follow_redirects=False
    )
    assert r.status_code == 303, r.text


def _signed_in(client: TestClient) -> bool:
    r = client.get("/console/", headers={"accept": "text/html"}, follow_redirects=False)
    assert r.status_code in (200, 303)
    return r.status_code == 200


@pytest.fixture
def browser_like(app) -> TestClient:
    with TestClient(app) as c:  # no Authorization header: only the cookie
        yield c


def test_cookie_is_bound_to_key_and_expiry(browser_like: TestClient, client, tenant_key) -> None:
    _sign_in(browser_like, tenant_key)
    assert _signed_in(browser_like)
    value = browser_like.cookies["adaptd_console"]
    assert tenant_key not in value
    key_id, expiry, nonce, signature = value.split(".")

    def use(cookie: str) -> bool:
        browser_like.cookies.clear()
        browser_like.cookies.set("adaptd_console", cookie, path="/console")
        return _signed_in(browser_like)

    assert not use(f"{key_id}.{int(expiry) + 3600}.{nonce}.{signature}")  # longer life: no
    assert not use(f"{key_id}.{expiry}.{nonce}.{signature[:-2]}xx")  # forged signature
    # An API key in the Authorization header is no console session.
    r = client.get("/console/", headers={"accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 303
    # A correctly signed cookie that has expired is refused too.
    row = _key_row(key_id)
    past = str(int(time.time()) - 1)
    mac = console_session._mac("session", key_id, past, nonce, row.key_hash)
    assert not use(f"{key_id}.{past}.{nonce}.{mac}")
    assert use(value)

    # Revoking the key (here straight in the table) ends the session at its next request.
    from app.auth.models import ApiKey
    from app.db import get_sessionmaker, utcnow

    with get_sessionmaker()() as session:
        session.get(ApiKey, key_id).revoked_at = utcnow()
        session.commit()
    assert not use(value)


def _key_row(key_id: str):
    from app.auth.models import ApiKey
    from app.db import get_sessionmaker

    with get_sessionmaker()() as session:
        return session.get(ApiKey, key_id)


def test_script_calls_need_the_token(browser_like: TestClient) -> None:
    _sign_in(browser_like, ADMIN_KEY)
    body = {"model": "x", "input": "hi"}
    assert browser_like.post("/console/playground/stream", json=body).status_code == 403
    r = browser_like.post(
        "/console/playground/stream", json=body, headers={"x-csrf-token": "forged"}
    )
    assert r.status_code == 403
    browser_like.cookies.clear()
    assert browser_like.post("/console/playground/stream", json=body).status_code == 401


def _csrf(client: TestClient) -> str:
    page = client.get("/console/", headers={"accept": "text/html"}).text
    return page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]


def test_signing_out_ends_the_session_for_every_copy_of_its_cookie(
    browser_like: TestClient, tenant_key
) -> None:
    _sign_in(browser_like, tenant_key)
    copy = browser_like.cookies["adaptd_console"]
    r = browser_like.post(
        "/console/logout", data={"csrf_token": _csrf(browser_like)}, follow_redirects=False
    )
    assert r.status_code == 303
    browser_like.cookies.set("adaptd_console", copy, path="/console")
    assert not _signed_in(browser_like)
    _sign_in(browser_like, tenant_key)  # a new sign-in is a new session
    assert _signed_in(browser_like)


def test_a_secret_in_its_rotation_grace_period_cannot_sign_in(
    browser_like: TestClient, client
) -> None:
    made = client.post("/v1/admin/keys", json={"tenant": "acme"}).json()
    rotated = client.post(
        f"/v1/admin/keys/{made['id']}/rotate", json={"grace_period_s": 3600}
    ).json()
    # The old secret still serves the API during its grace period...
    old = {"Authorization": f"Bearer {made['key']}"}
    assert client.get("/v1/models", headers=old).status_code == 200
    # ...but opens no console session (one would be bound to the new secret for 8 hours).
    form = browser_like.get("/console/login").text
    token = form.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    r = browser_like.post("/console/login", data={"api_key": made["key"], "csrf_token": token})
    assert r.status_code == 401 and "rotated" in r.text
    assert not _signed_in(browser_like)
    _sign_in(browser_like, rotated["key"])
    assert _signed_in(browser_like)


@pytest.mark.parametrize("action", ["rotate", "revoke"])
def test_tenant_admin_cannot_rotate_or_revoke_a_platform_key_in_the_console(
    browser_like: TestClient, client, action
) -> None:
    scopes = ["inference", "manage", "admin"]
    platform = client.post(
        "/v1/admin/keys", json={"tenant": "acme", "scopes": scopes, "platform": True}
    ).json()
    admin = client.post("/v1/admin/keys", json={"tenant": "acme", "scopes": scopes}).json()
    _sign_in(browser_like, admin["key"])
    assert platform["id"] not in browser_like.get("/console/keys").text
    r = browser_like.post(
        f"/console/keys/{platform['id']}/{action}",
        data={"csrf_token": _csrf(browser_like)},
        follow_redirects=False,
    )
    assert r.status_code == 404
    p = {"Authorization": f"Bearer {platform['key']}"}
    assert client.get("/v1/admin/keys", headers=p).status_code == 200  # untouched


def test_an_upload_over_the_limit_is_a_page(browser_like: TestClient, settings_env) -> None:
    """The console takes files as large as the API does (MAX_UPLOAD_BYTES, over the 4 MiB
    body cap) and refuses larger ones with an HTML page, not the API's JSON."""
    _sign_in(browser_like, ADMIN_KEY)
    page = browser_like.get("/console/files").text
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    turns = [{"role": "user", "content": "Say yes."}, {"role": "assistant", "content": "yes"}]
    row = {"messages": turns, "note": "x" * 10_000}  # a key the trainer does not read
    data = (json.dumps(row) + "\n").encode() * 500  # about 5 MiB
    assert settings_env.max_body_bytes < len(data) < settings_env.max_upload_bytes
    r = browser_like.post(
        "/console/files",
        data={"csrf_token": token, "purpose": "fine-tune"},
        files={"file": ("big.jsonl", data)},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text[-2000:]  # stored: back to the list
    assert browser_like.get("/v1/files", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()[
        "data"
    ][0]["bytes"] == len(data)

    over = b"x" * (settings_env.max_upload_bytes + 1)
    r = browser_like.post(
        "/console/files",
        data={"csrf_token": token, "purpose": "fine-tune"},
        files={"file": ("huge.jsonl", over)},
    )
    assert r.status_code == 413
    assert r.headers["content-type"].startswith("text/html")
    assert f"the limit is {settings_env.max_upload_bytes / 2**20:g} MiB" in r.text
    assert 'href="/console/files"' in r.text
    assert r.headers["content-security-policy"]
