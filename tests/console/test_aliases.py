"""Aliases: create, repoint with weights, see the history and the traffic, roll back."""

from playwright.sync_api import expect


def test_repoint_and_roll_back(admin, client) -> None:
    for name in ("short", "long"):
        assert client.post("/v1/templates", json={"name": name}).status_code == 201
    page = admin.page
    admin.goto("/aliases")
    page.get_by_label("Name", exact=True).fill("support")
    page.get_by_label("Target 1").select_option("tmpl:short")
    page.get_by_role("button", name="Create alias").click()
    page.wait_for_url("**/console/aliases/support")

    # An alias cannot point at another alias: the list offers none, the service refuses.
    assert page.get_by_label("Target 2").locator("option", has_text="support").count() == 0

    page.get_by_label("Target 2").select_option("tmpl:long")
    page.get_by_label("Weight 2").fill("3")
    page.get_by_role("button", name="Save as version 2").click()
    history = page.locator("#history tbody tr")
    expect(history).to_have_count(2)
    expect(history.first).to_contain_text("2 (current)")
    expect(history.first).to_contain_text("tmpl:long (3.00)")
    api = client.get("/v1/aliases/support").json()
    assert api["version"] == 2
    assert [(t["model"], t["weight"]) for t in api["targets"]] == [
        ("tmpl:short", 1.0),
        ("tmpl:long", 3.0),
    ]

    # Traffic shows per variant.
    reply = client.post(
        "/v1/chat/completions",
        json={"model": "support", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert reply.status_code == 200, reply.text
    served = reply.json()["model"]
    page.reload()
    expect(page.locator(".lead")).to_contain_text(f"{served} 1")

    # A weight of zero is refused, shown on the page, and nothing changes.
    page.get_by_label("Weight 1").fill("0")
    page.get_by_role("button", name="Save as version 3").click()
    expect(page.get_by_role("alert")).to_contain_text("must be a number above 0")
    assert client.get("/v1/aliases/support").json()["version"] == 2

    admin.goto("/aliases/support")
    page.get_by_role("button", name="Roll back to version 1").click()
    expect(history).to_have_count(3)
    expect(history.first).to_contain_text("3 (current)")
    expect(history.first).not_to_contain_text("tmpl:long")
    assert [t["model"] for t in client.get("/v1/aliases/support").json()["targets"]] == [
        "tmpl:short"
    ]
    admin.shot("alias")
    admin.shot("alias", phone=True)
    assert admin.fits_width()
