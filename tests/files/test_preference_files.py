"""Preference (DPO) files: accepted and normalised, or refused with each problem's line and
code, through the upload API; nothing is stored for a bad file."""

import json

import pytest

from tests.files.data import chat_rows, jsonl, preference_rows, upload


def _with_line(bad: dict | str, at: int) -> bytes:
    lines = jsonl(preference_rows(12)).splitlines(keepends=True)
    lines[at - 1] = (bad if isinstance(bad, str) else json.dumps(bad)).encode() + b"\n"
    return b"".join(lines)


def _pair(**overrides) -> dict:
    row = preference_rows(1)[0]
    row.update(overrides)
    return row


ASSISTANT = [{"role": "assistant", "content": "Paris"}]
CASES = {
    "invalid_json": (_with_line('{"input": ', 2), 2),
    "missing_input": (_with_line(_pair(input={"messages": []}), 3), 3),
    "unknown_role": (
        _with_line(_pair(input={"messages": [{"role": "wizard", "content": "hi"}]}), 4),
        4,
    ),
    "empty_content": (
        _with_line(_pair(input={"messages": [{"role": "user", "content": " "}]}), 5),
        5,
    ),
    "input_not_ending_with_user": (
        _with_line(
            _pair(
                input={
                    "messages": [
                        {"role": "user", "content": "hi"},
                        {"role": "assistant", "content": "hello"},
                    ]
                }
            ),
            6,
        ),
        6,
    ),
    "invalid_output": (
        _with_line(_pair(preferred_output=[{"role": "user", "content": "Paris"}]), 7),
        7,
    ),
    "identical_outputs": (
        _with_line(_pair(non_preferred_output=_pair()["preferred_output"]), 8),
        8,
    ),
}


@pytest.mark.parametrize("code", sorted(CASES))
def test_each_problem_has_its_line_and_code(client, code):
    data, line = CASES[code]
    r = upload(client, data, name="prefs.jsonl")
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_file"
    assert {"line": line, "code": code} in [
        {"line": p["line"], "code": p["code"]} for p in error["details"]
    ]
    assert client.get("/v1/files").json()["data"] == []


def test_every_problem_of_a_file_is_listed():
    from app.files.validation import parse_dataset

    lines = jsonl(preference_rows(12)).splitlines(keepends=True)
    lines[1] = json.dumps(_pair(preferred_output="Paris")).encode() + b"\n"
    lines[9] = json.dumps(_pair(non_preferred_output=[{"role": "assistant"}])).encode() + b"\n"
    parsed = parse_dataset(
        b"".join(lines), "p.jsonl", max_bytes=1 << 20, min_examples=10, context_window=512
    )
    assert [(p.line, p.code) for p in parsed.problems] == [
        (2, "invalid_output"),
        (10, "empty_content"),
    ]


def test_preference_and_sft_lines_do_not_mix(client):
    data = jsonl(preference_rows(6) + chat_rows(6))
    r = upload(client, data, name="mixed.jsonl")
    assert r.status_code == 400
    assert "mixed_formats" in [p["code"] for p in r.json()["error"]["details"]]


def test_a_good_file_is_stored_as_pairs(client, settings_env):
    r = upload(client, jsonl(preference_rows(12)), name="prefs.jsonl")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["format"] == "preference" and body["num_examples"] == 12
    assert body["stats"]["max_tokens"] > 0
    stored = (settings_env.files_dir / f"{body['id']}.examples.jsonl").read_text().splitlines()
    first = json.loads(stored[0])
    assert first == {
        "messages": [{"role": "user", "content": "Say the word for France."}],
        "preferred": "Paris",
        "non_preferred": preference_rows(1)[0]["non_preferred_output"][0]["content"],
    }
