"""Memory per upload is bounded: a file at the size limit, all problems or all examples,
raises the process's peak resident memory by a few MiB, not by multiples of the file."""

import json
import os
import subprocess
import sys
from pathlib import Path

from app.files.problems import MAX_REPORTED_ERRORS
from app.files.validation import parse_dataset
from tests.files.data import chat_rows, jsonl, upload

ROOT = Path(__file__).resolve().parents[2]
# The file itself is 64 MiB: any copy of it in memory, let alone its parsed lines or one
# object per problem, goes far past this.
MAX_RISE_KIB = 32 * 1024


def _peak(case: str, folder: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "tests.files.upload_peak", case, str(folder)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_file_of_bad_lines_at_the_limit(tmp_path):
    from tests.files.upload_peak import INVALID_LINE

    result = _peak("invalid", tmp_path)
    lines = result["bytes"] // len(INVALID_LINE)
    assert result["error"].startswith(f"The file has {lines} problem(s) and was not stored")
    assert result["details"] == MAX_REPORTED_ERRORS
    assert result["rise_kib"] < MAX_RISE_KIB, result
    assert os.listdir(tmp_path / "files") == []  # nothing stored, nothing left behind


def test_a_file_of_good_lines_at_the_limit(tmp_path):
    from tests.files.upload_peak import CHAT_LINE

    result = _peak("valid", tmp_path)
    assert result["examples"] == result["bytes"] // len(CHAT_LINE)
    assert result["rise_kib"] < MAX_RISE_KIB, result


def test_problems_past_the_reported_ones_are_counted_not_kept():
    data = jsonl(chat_rows(12)) + b"{oops\n" * 250
    parsed = parse_dataset(
        data, "train.jsonl", max_bytes=1 << 20, min_examples=10, context_window=512
    )
    assert parsed.problem_count == 250
    assert len(parsed.problems) == MAX_REPORTED_ERRORS
    assert [p.line for p in parsed.problems] == list(range(13, 13 + MAX_REPORTED_ERRORS))


def test_the_error_counts_every_problem(client):
    r = upload(client, b"{oops\n" * 250)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["message"].startswith("The file has 250 problem(s) and was not stored")
    assert len(error["details"]) == MAX_REPORTED_ERRORS


def test_a_line_of_too_many_values_is_refused_unparsed():
    """Parsed, 8 MiB of `{},` in one line held hundreds of MiB; past MAX_JSON_ITEMS values
    a line is invalid_json. Commas, brackets and escaped quotes inside strings are text."""
    from app.files.validation import MAX_JSON_ITEMS, load_json_line

    many = b'{"messages": [' + b"{}," * MAX_JSON_ITEMS + b"{}]}"
    lines = jsonl(chat_rows(12)).splitlines(keepends=True)
    lines[3] = many + b"\n"
    parsed = parse_dataset(
        b"".join(lines), "train.jsonl", max_bytes=1 << 30, min_examples=10, context_window=512
    )
    assert [(p.line, p.code) for p in parsed.problems] == [(4, "invalid_json")]
    assert "values in one line" in parsed.problems[0].message

    text = 'say \\"[{,\\" ' * MAX_JSON_ITEMS + "\\\\"
    row = {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]}
    obj, problem = load_json_line(1, json.dumps(row))
    assert problem is None and obj == row
