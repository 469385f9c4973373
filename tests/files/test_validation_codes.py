"""One test per validation code: the 400 names the line and the code."""

import json

import pytest

from tests.files.data import chat_rows, jsonl, upload


def _with_line(bad: bytes, at: int = 3, n: int = 12) -> bytes:
    """`n` good chat lines with line `at` (1-based) replaced by `bad`."""
    lines = jsonl(chat_rows(n)).splitlines(keepends=True)
    lines[at - 1] = bad + b"\n"
    return b"".join(lines)


def _problems(client, data: bytes, name: str = "train.jsonl") -> list[dict]:
    r = upload(client, data, name=name)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    return r.json()["error"]["details"]


def _msg(role: str, content) -> bytes:
    import json

    return json.dumps(
        {"messages": [{"role": role, "content": content}, {"role": "assistant", "content": "x"}]}
    ).encode()


CASES = {
    "invalid_json": (_with_line(b'{"messages": [', 4), 4),
    "missing_messages": (_with_line(b'{"text": "hello"}', 5), 5),
    "unknown_role": (_with_line(_msg("wizard", "hi"), 6), 6),
    "empty_content": (_with_line(_msg("user", "   "), 7), 7),
    "no_assistant_turn": (
        _with_line(b'{"messages": [{"role": "user", "content": "hi"}]}', 8),
        8,
    ),
    "invalid_weight": (
        _with_line(
            b'{"messages": [{"role": "user", "content": "hi"},'
            b' {"role": "assistant", "content": "x", "weight": 0.5}]}',
            2,
        ),
        2,
    ),
    "invalid_message": (_with_line(b'{"messages": ["just text"]}', 9), 9),
}


@pytest.mark.parametrize("code", sorted(CASES))
def test_jsonl_line_codes(client, code):
    data, line = CASES[code]
    problems = _problems(client, data)
    assert [(p["line"], p["code"]) for p in problems] == [(line, code)]


def test_invalid_encoding(client):
    data = _with_line(b'{"messages": [{"role": "user", "content": "caf\xe9"}]}', 5)
    problems = _problems(client, data)
    assert [(p["line"], p["code"]) for p in problems] == [(5, "invalid_encoding")]


@pytest.mark.both_databases
@pytest.mark.parametrize(
    "line",
    [
        _msg("user", "a\u0000b"),  # a NUL in a message
        b'{"messages": [{"role": "user", "content": "hi"}, '
        b'{"role": "assistant", "content": "x"}], "note\\u0000": 1}',  # in a key
        _msg("user", "\ud800"),  # a lone surrogate, as before
    ],
)
def test_unstorable_text_is_invalid_encoding_on_its_line(client, line):
    """PostgreSQL cannot store a NUL: the rows made from a file (evaluation items, job
    metadata) would fail later, so the line is refused here, as a request body's would be."""
    problems = _problems(client, _with_line(line, 6))
    assert [(p["line"], p["code"]) for p in problems] == [(6, "invalid_encoding")]


def test_too_long(client, settings_env):
    # The tiny model's context window is 256 tokens.
    long = _msg("user", "capital " * 400)
    problems = _problems(client, _with_line(long, 10))
    assert [(p["line"], p["code"]) for p in problems] == [(10, "too_long")]
    assert "256" in problems[0]["message"]


def test_too_few_examples(client):
    problems = _problems(client, jsonl(chat_rows(9)))
    assert [(p["line"], p["code"]) for p in problems] == [(None, "too_few_examples")]


def test_file_too_large(client, settings_env, monkeypatch):
    # Under the request cap (so the upload arrives) but over the file limit it checks.
    monkeypatch.setattr(settings_env, "max_upload_bytes", 200)
    problems = _problems(client, jsonl(chat_rows(12)))
    assert [(p["line"], p["code"]) for p in problems] == [(None, "file_too_large")]


def test_empty_file(client):
    assert [p["code"] for p in _problems(client, b"\n\n")] == ["empty_file"]


def test_bad_csv_header(client):
    data = b"question,answer\n" + b"a,b\n" * 12
    problems = _problems(client, data, name="train.csv")
    assert [(p["line"], p["code"]) for p in problems] == [(1, "bad_csv_header")]


def test_bad_csv_row(client):
    data = b"input,output\n" + b"a,b\n" * 5 + b"a,b,c\n" + b"a,b\n" * 6
    problems = _problems(client, data, name="train.csv")
    assert [(p["line"], p["code"]) for p in problems] == [(7, "bad_csv_row")]


def test_csv_empty_cell_is_empty_content_with_line(client):
    data = b"input,output\n" + b"a,b\n" * 3 + b"a,\n" + b"a,b\n" * 8
    problems = _problems(client, data, name="train.csv")
    assert [(p["line"], p["code"]) for p in problems] == [(5, "empty_content")]


def test_every_problem_is_listed_in_line_order(client):
    lines = jsonl(chat_rows(25)).splitlines(keepends=True)
    for i in range(0, 25, 1):
        lines[i] = b"{oops\n"
    problems = _problems(client, b"".join(lines))
    assert len(problems) == 25
    assert [p["line"] for p in problems] == list(range(1, 26))


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])
def test_unicode_line_separators_inside_json_strings(client, settings_env, separator):
    """Lines end at \\n (or \\r\\n) only; other separators are text inside a JSON string."""
    rows = chat_rows(12)
    text = f"one{separator}two"
    rows[2]["messages"][0]["content"] = text
    good = "".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows).encode()
    r = upload(client, good)
    assert r.status_code == 200, r.text
    assert r.json()["num_examples"] == 12

    from app.db import get_sessionmaker
    from app.files import service
    from app.files.models import File

    with get_sessionmaker()() as session:
        row = session.get(File, r.json()["id"])
        examples = service.read_examples(row, settings_env.files_dir)
    assert examples[2]["messages"][0]["content"] == text

    # The lines after it keep their numbers.
    bad = good.replace(json.dumps(rows[4]).encode(), b'{"messages": [')
    r = upload(client, bad)
    assert r.status_code == 400
    assert [(p["line"], p["code"]) for p in r.json()["error"]["details"]] == [(5, "invalid_json")]
