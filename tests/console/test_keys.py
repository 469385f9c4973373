"""Keys (admin): create with the secret shown once, list, rotate, revoke; and the console
acting with the signed-in key's scopes, no more."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient
from playwright.sync_api import expect

from tests.console.conftest import DESKTOP, Watched, sign_in

XSS = '<img src=x onerror=alert("key")>'


def _api(client: TestClient, secret: str, method: str, path: str, **kwargs):
    return client.request(method, path, headers={"Authorization": f"Bearer {secret}"}, **kwargs)


def _row(watched: Watched, name: str):
    return watched.page.locator("#keys tbody tr", has_text=name)


def _csrf(watched: Watched) -> str:
    return watched.page.locator('meta[name="csrf-token"]').get_attribute("content")


def _post_form(watched: Watched, path: str, data: dict):
    """A form post from the signed-in page, with its CSRF token (what a crafted form could
    send); the server, not the hidden link, must refuse it."""
    return watched.page.request.post(
        watched.base_url + "/console" + path, form={"csrf_token": _csrf(watched), **data}
    )


def test_admin_creates_rotates_and_revokes_a_key(admin: Watched, client, caplog) -> None:
    caplog.set_level(logging.INFO)
    page = admin.page
    page.get_by_role("link", name="Keys").click()
    expect(page.get_by_role("heading", name="API keys")).to_be_visible()
    bootstrap = page.locator("#keys tbody tr", has_text="bootstrap admin")
    expect(bootstrap).to_contain_text("active")
    expect(bootstrap.get_by_role("button")).to_have_count(0)  # changed only by restarting

    # A bad form: no scope at all, and an expiry that is no number of days.
    name = f"billing {XSS}"
    page.get_by_label("Name").fill(name)
    page.get_by_label("inference", exact=True).uncheck()
    page.get_by_label("Expires in (days)").evaluate("el => el.removeAttribute('min')")
    page.get_by_label("Expires in (days)").fill("-3")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator('[data-error-for="days"]')).to_contain_text("whole number of days")
    expect(page.locator("#new-key")).to_have_count(0)
    page.get_by_label("Expires in (days)").fill("30")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator('[data-error-for="scopes"]')).not_to_be_empty()
    expect(page.locator("#new-key")).to_have_count(0)
    assert _row(admin, "billing").count() == 0  # nothing stored

    page.get_by_label("inference", exact=True).check()
    page.get_by_label("Tenant").fill("not a tenant!")  # a platform admin picks the tenant
    page.get_by_role("button", name="Create key").click()
    expect(page.locator('[data-error-for="tenant"]')).to_contain_text("tenant may hold only")
    expect(page.get_by_label("Name")).to_have_value(name)  # the form kept what was typed
    page.get_by_label("Tenant").fill("")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("Secret", exact=True).input_value()
    assert secret.startswith("sk-adaptd-")
    assert secret not in page.url
    row = _row(admin, "billing")
    expect(row).to_contain_text(name)  # the payload as text, not an element
    expect(row).to_contain_text(secret[:14])
    expect(row).to_contain_text("inference")
    expect(row.locator(".status")).to_have_text("active")
    expect(row.locator("td").nth(7)).not_to_have_text("—")  # expires in 30 days
    admin.shot("keys")
    admin.shot("keys", phone=True)

    # The key works with exactly its scope.
    assert _api(client, secret, "GET", "/v1/models").status_code == 200
    refused = _api(client, secret, "POST", "/v1/templates", json={"name": "nope"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope"

    # Shown once: the list shows the prefix only, and reloading shows no secret.
    admin.goto("/keys")
    expect(page.locator("#new-key")).to_have_count(0)
    assert secret not in page.content()

    # Rotate without grace: a new secret, the old one refused at once.
    _row(admin, "billing").get_by_role("button", name="Rotate").click()
    expect(page.locator("#new-key")).to_contain_text("New secret")
    rotated = page.get_by_label("Secret", exact=True).input_value()
    assert rotated != secret and rotated.startswith("sk-adaptd-")
    assert _api(client, secret, "GET", "/v1/models").status_code == 401
    assert _api(client, rotated, "GET", "/v1/models").status_code == 200

    # Rotate with a grace period: the previous secret keeps working for it.
    _row(admin, "billing").get_by_label("Old secret valid for (s)").fill("600")
    _row(admin, "billing").get_by_role("button", name="Rotate").click()
    expect(page.locator("#new-key")).to_contain_text("The old secret keeps working until")
    newest = page.get_by_label("Secret", exact=True).input_value()
    assert _api(client, rotated, "GET", "/v1/models").status_code == 200
    assert _api(client, newest, "GET", "/v1/models").status_code == 200

    # Revoke: refused on the next request, shown as revoked, no more buttons.
    _row(admin, "billing").get_by_role("button", name="Revoke").click()
    page.wait_for_url("**/console/keys")
    row = _row(admin, "billing")
    expect(row.locator(".status")).to_have_text("revoked")
    expect(row.get_by_role("button")).to_have_count(0)
    for value in (newest, rotated):
        assert _api(client, value, "GET", "/v1/models").status_code == 401

    # No secret in any log line, while the console's requests were logged.
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert '"route": "/console/keys"' in logged
    for value in (secret, rotated, newest):
        assert value not in logged

    # The audit trail names the key the console was signed in with.
    billing_id = row.get_attribute("data-key-id")
    me = client.get("/v1/admin/keys", params={"tenant": "default"}).json()["data"]
    admin_id = next(k["id"] for k in me if k["name"] == "bootstrap admin")
    audit = client.get("/v1/admin/audit", params={"limit": 100}).json()["data"]
    actions = {(e["action"], e["actor_key_id"]) for e in audit if e["object_id"] == billing_id}
    assert actions == {(a, admin_id) for a in ("key.create", "key.rotate", "key.revoke")}


def test_keys_page_is_for_admin_keys_only(anonymous: Watched, client, tenant_key) -> None:
    sign_in(anonymous, tenant_key)  # inference + manage, no admin
    page = anonymous.page
    expect(page.get_by_role("link", name="Templates")).to_be_visible()
    expect(page.get_by_role("link", name="Keys")).to_have_count(0)
    response = anonymous.goto("/keys")
    assert response.status == 403
    expect(page.get_by_role("alert")).to_contain_text("'admin' scope")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()  # still signed in
    before = client.get("/v1/admin/keys", params={"tenant": "acme"}).json()["data"]
    posted = _post_form(anonymous, "/keys", {"name": "sneaky", "scopes": "admin"})
    assert posted.status == 403
    after = client.get("/v1/admin/keys", params={"tenant": "acme"}).json()["data"]
    assert [k["id"] for k in after] == [k["id"] for k in before]
    own_id = before[0]["id"]
    assert _post_form(anonymous, f"/keys/{own_id}/revoke", {}).status == 403
    assert _api(client, tenant_key, "GET", "/v1/models").status_code == 200


def test_inference_only_key_cannot_manage_through_the_console(anonymous: Watched, client) -> None:
    made = client.post(
        "/v1/admin/keys", json={"tenant": "acme", "name": "app", "scopes": ["inference"]}
    )
    assert made.status_code == 201, made.text
    page = anonymous.page
    anonymous.goto("/login")
    page.get_by_label("API key").fill(made.json()["key"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/playground")  # its landing page, not the variants
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link")).to_have_text(["Playground"])
    anonymous.goto("/")
    page.wait_for_url("**/console/playground")
    for path in ("/templates/new", "/files", "/jobs", "/evals", "/aliases", "/keys"):
        response = anonymous.goto(path)
        assert response.status == 403, path
        expect(page.get_by_role("alert")).to_contain_text("scope")
    posted = _post_form(anonymous, "/templates", {"name": "by-inference-key"})
    assert posted.status == 403
    acme = client.post("/v1/admin/keys", json={"tenant": "acme", "name": "reader"}).json()["key"]
    assert _api(client, acme, "GET", "/v1/templates/by-inference-key").status_code == 404


def test_manage_only_key_cannot_run_models_through_the_console(
    browser, live_server: str, client
) -> None:
    made = client.post("/v1/admin/keys", json={"tenant": "acme", "scopes": ["manage"]})
    with _other_session(browser, live_server, made.json()["key"]) as other:
        nav = other.page.get_by_role("navigation", name="Main")
        expect(nav.get_by_role("link", name="Playground")).to_have_count(0)
        assert other.goto("/playground").status == 403
        r = other.page.request.post(
            live_server + "/console/playground/stream",
            data={"model": "x", "input": "hi"},
            headers={"x-csrf-token": _csrf(other)},
        )
        assert r.status == 403
        assert r.json()["error"]["code"] == "insufficient_scope"


@contextmanager
def _other_session(browser, base_url: str, key: str, lands: str = "/") -> Iterator[Watched]:
    """A second browser, signed in with `key` (landing on `lands`), beside the test's own."""
    context = browser.new_context(viewport=DESKTOP)
    try:
        other = Watched(context.new_page(), base_url)
        other.goto("/login")
        other.page.get_by_label("API key").fill(key)
        other.page.get_by_role("button", name="Sign in").click()
        other.page.wait_for_url(f"**/console{lands}")
        yield other
        other.assert_clean()
    finally:
        context.close()


def test_revoking_a_key_ends_its_console_session(browser, admin: Watched, client) -> None:
    made = client.post("/v1/admin/keys", json={"tenant": "acme", "name": "doomed"}).json()
    with _other_session(browser, admin.base_url, made["key"]) as other:
        expect(other.page.get_by_role("heading", name="Variants")).to_be_visible()

        admin.goto("/keys")
        _row(admin, "doomed").get_by_role("button", name="Revoke").click()
        expect(_row(admin, "doomed").locator(".status")).to_have_text("revoked")

        other.goto("/files")  # the very next request
        other.page.wait_for_url("**/console/login")
        expect(other.page.get_by_role("heading", name="Sign in")).to_be_visible()
        other.page.get_by_label("API key").fill(made["key"])
        other.page.get_by_role("button", name="Sign in").click()
        expect(other.page.get_by_role("alert")).to_contain_text("not valid")


def test_tenant_admin_manages_its_own_tenants_keys(browser, live_server: str, client) -> None:
    made = client.post(
        "/v1/admin/keys", json={"tenant": "acme", "name": "acme-admin", "scopes": ["admin"]}
    )
    globex = client.post("/v1/admin/keys", json={"tenant": "globex", "name": "globex-app"})
    assert made.status_code == globex.status_code == 201
    with _other_session(browser, live_server, made.json()["key"], lands="/keys") as acme:
        page = acme.page
        nav = page.get_by_role("navigation", name="Main")
        expect(nav.get_by_role("link")).to_have_text(["Keys"])  # admin scope only
        # Every scope can be given, whatever this key's own; no tenant field (its own).
        expect(page.locator('input[name="scopes"]')).to_have_count(3)
        expect(page.get_by_label("Tenant")).to_have_count(0)
        expect(page.locator("#keys tbody tr")).to_have_count(1)  # its own key, not globex's
        expect(_row(acme, "acme-admin").locator(".status")).to_contain_text("this session")

        page.get_by_label("Name").fill("acme-app")
        page.get_by_label("manage", exact=True).check()
        page.get_by_role("button", name="Create key").click()
        secret = page.get_by_label("Secret", exact=True).input_value()
        key_id = _row(acme, "acme-app").get_attribute("data-key-id")
        read = client.get(f"/v1/admin/keys/{key_id}").json()
        assert read["tenant"] == "acme" and read["scopes"] == ["inference", "manage"]
        assert _api(client, secret, "GET", "/v1/templates").status_code == 200
