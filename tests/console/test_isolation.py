"""The console acts as the signed-in key's tenant: another tenant's things answer 404."""

from playwright.sync_api import expect

from tests.console.conftest import sign_in
from tests.files.data import chat_rows, jsonl, upload


def test_other_tenants_things_are_not_found(anonymous, client, tenant_key) -> None:
    assert client.post("/v1/templates", json={"name": "admins-own"}).status_code == 201
    file_id = upload(client, jsonl(chat_rows(12))).json()["id"]
    job = client.post(
        "/v1/fine_tuning/jobs",
        json={"model": client.get("/v1/models").json()["data"][0]["id"], "training_file": file_id},
    ).json()
    alias = client.post(
        "/v1/aliases", json={"name": "admins-alias", "targets": [{"model": "tmpl:admins-own"}]}
    )
    assert alias.status_code == 201, alias.text

    sign_in(anonymous, tenant_key)  # tenant "acme"
    page = anonymous.page
    expect(page.locator("#templates")).to_have_count(0)  # none of its own
    for path, message in [
        ("/templates/admins-own", "No template named 'admins-own'."),
        (f"/jobs/{job['id']}", "No such fine-tuning job"),
        ("/aliases/admins-alias", "No alias named 'admins-alias'."),
    ]:
        response = anonymous.goto(path)
        assert response.status == 404
        expect(page.get_by_role("alert")).to_contain_text(message)
    assert (
        page.request.get(anonymous.base_url + f"/console/jobs/{job['id']}/loss.svg").status == 404
    )
    anonymous.goto("/files")
    expect(page.locator("#files")).to_have_count(0)
    anonymous.goto("/jobs")
    expect(page.locator("#jobs")).to_have_count(0)
    anonymous.goto("/playground")
    assert page.get_by_label("Variant 1").locator("option", has_text="admins-own").count() == 0
    client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")


def test_sign_in_with_the_keyboard(anonymous) -> None:
    from tests.conftest import ADMIN_KEY

    anonymous.goto("/login")
    page = anonymous.page
    assert page.evaluate("document.activeElement.id") == "api_key"  # focused on arrival
    page.keyboard.type(ADMIN_KEY)
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/")
    # Every form control on each page has a label (or an aria-label).
    for path in ("/", "/templates/new", "/playground", "/files", "/jobs", "/evals", "/aliases"):
        anonymous.goto(path)
        unlabelled = page.evaluate(
            """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
                .map(el => el.name || el.id)"""
        )
        assert unlabelled == [], (path, unlabelled)
