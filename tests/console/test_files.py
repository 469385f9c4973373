"""Files: a bad upload shows every problem with its line; a payload in a line is text."""

import json

from playwright.sync_api import expect

from tests.files.data import chat_rows, jsonl

XSS_ROLE = "<img src=x onerror=alert('file')>"


def test_bad_file_shows_its_problems_by_line(admin, client, tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        "\n".join(
            [
                json.dumps(chat_rows(1)[0]),
                '{"messages": [',
                json.dumps({"messages": [{"role": XSS_ROLE, "content": "hi"}]}),
                json.dumps({"prompt": "only a prompt"}),
            ]
        )
        + "\n"
    )
    page = admin.page
    admin.goto("/files")
    page.get_by_label("Data set (JSONL or CSV)").set_input_files(str(bad))
    page.get_by_label("Purpose").select_option("fine-tune")
    page.get_by_role("button", name="Upload").click()

    expect(page.get_by_role("alert")).to_contain_text("was not stored")
    rows = page.locator("#problems tbody tr")
    lines = [rows.nth(i).locator("td").first.inner_text() for i in range(rows.count())]
    assert lines[:2] == ["2", "3"] and "whole file" in lines
    table = page.locator("#problems")
    expect(table).to_contain_text("invalid_json")
    expect(table).to_contain_text("unknown_role")
    expect(table).to_contain_text(XSS_ROLE)  # the payload, as text
    expect(table).to_contain_text("too_few_examples")
    assert page.locator("#problems img").count() == 0
    admin.shot("files-problems")
    admin.shot("files-problems", phone=True)
    assert admin.fits_width()
    assert client.get("/v1/files").json()["data"] == []  # nothing stored

    good = tmp_path / "train.jsonl"
    good.write_bytes(jsonl(chat_rows(12)))
    page.get_by_label("Data set (JSONL or CSV)").set_input_files(str(good))
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_role("status").filter(has_text="Stored as")).to_be_visible()
    stored = client.get("/v1/files").json()["data"]
    assert len(stored) == 1
    row = page.locator("#files tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(stored[0]["id"])
    expect(row).to_contain_text("train.jsonl")
    expect(row.locator("td").nth(4)).to_have_text("12")

    page.get_by_role("button", name=f"Delete {stored[0]['id']}").click()
    expect(page.locator("#files")).to_have_count(0)
    assert client.get("/v1/files").json()["data"] == []
