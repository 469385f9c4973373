"""Sign in with a key, see the tenant's console, sign out; no key in the browser."""

import httpx

from tests.conftest import ADMIN_KEY
from tests.console.conftest import sign_in


def test_sign_in_and_out(anonymous, client) -> None:
    page = anonymous.page
    anonymous.goto("/")
    page.wait_for_url("**/console/login")  # not signed in: sent to the form

    page.get_by_label("API key").fill("sk-adaptd-not-a-key")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "That key is not valid (or was revoked)."
    anonymous.shot("sign-in")
    anonymous.shot("sign-in", phone=True)

    sign_in(anonymous, ADMIN_KEY)
    assert page.get_by_role("heading", name="Variants", exact=True).is_visible()
    assert "default ·" in page.locator(".who").inner_text()

    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["adaptd_console"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert ADMIN_KEY not in session["value"] and ADMIN_KEY[-20:] not in session["value"]
    assert page.evaluate("document.cookie") == ""  # nothing readable by page scripts
    assert ADMIN_KEY not in page.url

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/login")
    anonymous.goto("/")
    page.wait_for_url("**/console/login")


def test_tenant_key_acts_as_its_tenant(anonymous, tenant_key) -> None:
    sign_in(anonymous, tenant_key)
    assert "acme ·" in anonymous.page.locator(".who").inner_text()


def test_forms_refuse_cross_site_posts(live_server, client) -> None:
    """A session cookie alone (as a forged cross-site form would send it) changes nothing."""
    http = httpx.Client(base_url=live_server + "/console", follow_redirects=False)
    form = http.get("/login").text
    token = form.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    signed = http.post("/login", data={"api_key": ADMIN_KEY, "csrf_token": token})
    assert signed.status_code == 303
    assert http.post("/logout").status_code == 403  # no token
    assert http.post("/logout", data={"csrf_token": "forged"}).status_code == 403
    r = http.get("/")
    assert r.status_code == 200
    token = r.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    assert (
        http.post(
            "/logout", data={"csrf_token": token}, headers={"origin": "https://evil.example"}
        ).status_code
        == 403
    )
    assert http.post("/logout", data={"csrf_token": token}).status_code == 303
    # A sign-in form posted without the pre-session cookie is refused too.
    bare = httpx.Client(base_url=live_server + "/console")
    assert bare.post("/login", data={"api_key": ADMIN_KEY, "csrf_token": token}).status_code == 403
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
