"""Template editor: field errors, a live preview that follows the input, versions and tags;
payloads in a name and an example render as text."""

from playwright.sync_api import expect

XSS_NAME = "<script>alert('name')</script>"
XSS_EXAMPLE = "<img src=x onerror=alert('example')>"


def test_create_template_with_live_preview(admin, client) -> None:
    page = admin.page
    admin.goto("/templates/new")

    page.get_by_label("Name", exact=True).fill(XSS_NAME)
    page.get_by_label("System prompt").fill("Classify the sentiment.")
    page.get_by_label("Instruction", exact=False).first.fill("Review: {{ input }}")
    page.get_by_role("button", name="Add example").click()
    page.get_by_label("Example 1 input").fill(XSS_EXAMPLE)
    page.get_by_label("Example 1 output").fill("positive")
    page.get_by_label("Sample input").fill("Loved every minute.")

    prompt = page.locator("#preview-prompt")
    expect(prompt).to_contain_text("Review: Loved every minute.")
    expect(prompt).to_contain_text(XSS_EXAMPLE)  # the example's text, as text
    expect(page.locator("#preview-examples")).to_have_text("1")
    tokens_before = int(page.locator("#preview-tokens").inner_text())

    # The preview follows the sample input.
    page.get_by_label("Sample input").fill("A long and winding review " * 5)
    expect(prompt).to_contain_text("Review: A long and winding review A long")
    expect(page.locator("#preview-tokens")).not_to_have_text(str(tokens_before))
    assert int(page.locator("#preview-tokens").inner_text()) > tokens_before

    # A broken instruction is shown at its field, live.
    page.get_by_label("Instruction", exact=False).first.fill("Review: {{ input ")
    expect(page.locator("#err-instruction")).to_contain_text("instruction")
    page.get_by_label("Instruction", exact=False).first.fill("Review: {{ input }}")
    expect(page.locator("#err-instruction")).to_have_text("")

    # Saving with the payload as its name: refused at the name field, shown as typed.
    page.get_by_role("button", name="Create template").click()
    expect(page.locator("#err-name")).to_contain_text("must start with a letter or digit")
    assert page.get_by_label("Name", exact=True).input_value() == XSS_NAME
    assert page.get_by_label("Example 1 input").input_value() == XSS_EXAMPLE
    admin.shot("template-editor-error")

    page.get_by_label("Name", exact=True).fill("sentiment")
    page.get_by_role("button", name="Create template").click()
    page.wait_for_url("**/console/templates/sentiment")
    expect(page.get_by_role("heading", level=1)).to_have_text("Template sentiment")
    assert page.get_by_label("Example 1 input").input_value() == XSS_EXAMPLE
    stored = client.get("/v1/templates/sentiment").json()
    assert stored["latest"]["examples"] == [{"input": XSS_EXAMPLE, "output": "positive"}]

    # A second version, then the production tag moved to version 1.
    page.get_by_label("System prompt").fill("Answer positive or negative.")
    page.get_by_role("button", name="Save as version 2").click()
    page.wait_for_url("**/console/templates/sentiment")
    expect(page.locator("#versions tbody tr")).to_have_count(2)
    page.get_by_label("Tag", exact=True).fill("production")
    page.get_by_label("Version", exact=True).select_option("1")
    page.get_by_role("button", name="Move tag").click()
    expect(page.locator("#tags")).to_contain_text("production → version 1")
    assert client.get("/v1/templates/sentiment").json()["tags"] == {"production": 1}
    page.get_by_label("Sample input").fill("Loved every minute.")
    expect(prompt).to_contain_text("Answer positive or negative.")
    expect(prompt).to_contain_text("Review: Loved every minute.")
    admin.shot("template-editor")
    admin.shot("template-editor", phone=True)
    assert admin.fits_width()

    # The overview lists it, names and examples escaped.
    admin.goto("/")
    expect(page.locator("#templates")).to_contain_text("sentiment")
    expect(page.locator("#templates")).to_contain_text("production→1")
    page.get_by_role("link", name="Try tmpl:sentiment in the playground").click()
    expect(page.get_by_label("Variant 1")).to_have_value("tmpl:sentiment")
    admin.goto("/")
    admin.shot("variants")
