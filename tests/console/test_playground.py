"""Playground: one input to two variants, both answers streamed with tokens and latency."""

from playwright.sync_api import expect


def test_two_variants_side_by_side(admin, client) -> None:
    created = client.post(
        "/v1/templates",
        json={"name": "shout", "system_prompt": "Answer loudly.", "instruction": "Q: {{ input }}"},
    )
    assert created.status_code == 201, created.text
    base = client.get("/v1/models").json()["data"][0]["id"]
    page = admin.page
    admin.goto("/playground")
    page.get_by_label("Variant 1").select_option(base)
    page.get_by_label("Variant 2").select_option("tmpl:shout")
    page.get_by_label("Input").fill("Name a colour.")
    page.get_by_label("Max tokens").fill("8")
    page.get_by_role("button", name="Run").click()

    cards = page.locator("#answers article")
    expect(cards).to_have_count(2)
    for model in (base, "tmpl:shout"):
        card = page.locator(f'#answers article[data-model="{model}"]')
        expect(card.locator(".model")).to_have_text(model)
        expect(card.locator(".state")).to_have_text("done", timeout=60_000)
        assert int(card.locator(".completion-tokens").inner_text()) == 8  # random weights: no EOS
        first, total = (int(card.locator(f".{k}").inner_text()) for k in ("first", "latency"))
        assert 0 <= first <= total
        assert card.locator(".text").inner_text() != ""
    base_prompt = int(page.locator(f'[data-model="{base}"] .prompt-tokens').inner_text())
    tmpl_prompt = int(page.locator('[data-model="tmpl:shout"] .prompt-tokens').inner_text())
    assert tmpl_prompt > base_prompt  # the template adds its system prompt and instruction
    admin.shot("playground")
    admin.shot("playground", phone=True)
    assert admin.fits_width()

    # One variant only is refused before anything is sent.
    page.get_by_label("Variant 2").select_option("")
    page.get_by_role("button", name="Run").click()
    expect(page.locator("#playground-error")).to_have_text("Choose 2 to 4 different variants.")


def test_unknown_variant_is_reported_in_its_column(admin, client) -> None:
    # A template deleted after the page was loaded: the API's own 404 shows in the column.
    client.post("/v1/templates", json={"name": "gone"})
    page = admin.page
    admin.goto("/playground")
    page.get_by_label("Variant 2").select_option("tmpl:gone")
    page.get_by_label("Max tokens").fill("4")
    assert client.delete("/v1/templates/gone").status_code == 204
    page.get_by_role("button", name="Run").click()
    card = page.locator('#answers article[data-model="tmpl:gone"]')
    expect(card.locator(".state")).to_have_text("failed", timeout=60_000)
    expect(card.locator(".text")).to_contain_text("does not exist")
    # The other column still streams to its end (and the server's loop must outlive it).
    other = page.locator("#answers article").first
    expect(other.locator(".state")).to_have_text("done", timeout=60_000)
