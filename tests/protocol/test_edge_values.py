"""The protocol edge's value rules (app/protocol/values.py, params.py), through the API: values
that used to reach the database, the tokenizer or the JSON encoder and come back as a 500
(issue 17): integers past what a column or a 64-bit seed holds, "²" (a digit to isdigit(), not
to int()), lone UTF-16 surrogates and NUL characters in bodies, paths, queries and forms. Each
is a 400 naming the field now."""

import json
import re
from typing import Any

import pytest

from app.protocol.values import DB_INT_MAX
from tests.conftest import ADMIN_KEY
from tests.files.data import chat_rows, jsonl, upload
from tests.templates.util import create

HUGE = 2**63  # one past a signed 64-bit integer
PAST_COLUMN = DB_INT_MAX + 1  # one past the tables' (32-bit) integer columns
LONE = "\ud800"


def post_json(client, url: str, body: Any):
    # json.dumps escapes the surrogate as \ud800, which is what a hostile client sends.
    return client.post(url, content=json.dumps(body), headers={"content-type": "application/json"})


def assert_error(response, status: int, param: str | None = None, code: str | None = None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 2,
        "messages": [{"role": "user", "content": "hi"}],
        **extra,
    }


# -- integers past what a column holds ------------------------------------------------------
@pytest.mark.both_databases
def test_huge_versions_and_cursors_are_refused_not_500(client) -> None:
    assert create(client).status_code == 201
    base = client.app.state.engine.name
    for number in (HUGE, PAST_COLUMN):
        assert_error(client.get(f"/v1/templates/sentiment/versions/{number}"), 400, "version")
        r = client.put("/v1/templates/sentiment/tags/prod", json={"version": number})
        assert_error(r, 400, "version")
        r = client.get("/v1/admin/audit", params={"after": number})
        assert_error(r, 400, "after")
    # The largest value a column holds passes validation: a version that does not exist.
    assert_error(client.get(f"/v1/templates/sentiment/versions/{DB_INT_MAX}"), 404)
    r = client.put("/v1/templates/sentiment/tags/prod", json={"version": DB_INT_MAX})
    assert r.status_code in (400, 404) and r.json()["error"]["code"], r.text
    # A template reference past any version: no such version, as for any other number.
    for ref in (
        f"sentiment@{HUGE}",
        f"sentiment@{PAST_COLUMN}",
        f"sentiment@{DB_INT_MAX}",
        "sentiment@" + "9" * 30,
        "sentiment@²",
    ):
        assert_error(client.post(f"/v1/templates/{ref}/render", json={"input": "x"}), 404)
        assert_error(client.post("/v1/chat/completions", json=chat(f"tmpl:{ref}")), 404, "model")
    r = client.post("/v1/aliases", json={"name": "al", "targets": [{"model": base}]})
    assert r.status_code == 201, r.text
    for number in (HUGE, PAST_COLUMN):
        r = client.post("/v1/aliases/al/rollback", json={"version": number})
        assert_error(r, 400, "version")
    assert_error(
        client.post("/v1/aliases/al/rollback", json={"version": DB_INT_MAX}),
        400,
        "version",
        "alias_version_not_found",
    )
    job = client.post(
        "/v1/fine_tuning/jobs",
        json={"model": base, "training_file": upload(client, jsonl(chat_rows())).json()["id"]},
    )
    assert job.status_code in (200, 201), job.text
    events = f"/v1/fine_tuning/jobs/{job.json()['id']}/events"
    for cursor in (f"ftevent-{HUGE}", f"ftevent-{PAST_COLUMN}", "ftevent-" + "9" * 30, "ftevent-²"):
        assert_error(client.get(events, params={"after": cursor}), 400, "after")
    for cursor in ("ftevent-1", f"ftevent-{DB_INT_MAX}"):
        assert client.get(events, params={"after": cursor}).status_code == 200


def test_seeds_past_64_bits_are_refused(client) -> None:
    base = client.app.state.engine.name
    for seed in (HUGE, -(2**63) - 1, 2**64):
        assert_error(client.post("/v1/chat/completions", json=chat(base, seed=seed)), 400, "seed")
        body = {"model": base, "prompt": "hi", "max_tokens": 2, "seed": seed}
        assert_error(client.post("/v1/completions", json=body), 400, "seed")
    file_id = upload(client, jsonl(chat_rows())).json()["id"]
    body = {"file_id": file_id, "variants": [base], "generation": {"seed": HUGE}}
    assert_error(client.post("/v1/evals", json=body), 400, "generation.seed")
    # The largest accepted seed runs (seed + choice index stays inside 64 bits).
    ok = client.post("/v1/chat/completions", json=chat(base, seed=2**63 - 9, n=2, temperature=1))
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("key", ["²", "١٢", "99999999999999999999", str(HUGE), "-1", " 1"])
def test_logit_bias_keys_must_be_token_ids(client, key: str) -> None:
    base = client.app.state.engine.name
    r = client.post("/v1/chat/completions", json=chat(base, logit_bias={key: 1}))
    assert_error(r, 400, "logit_bias")


# -- lone surrogates -------------------------------------------------------------------------
def test_lone_surrogates_are_refused_wherever_text_goes_in(client) -> None:
    base = client.app.state.engine.name
    assert (
        create(
            client, variables={"tone": None}, instruction="{{ tone }}: {{ input }}", examples=[]
        ).status_code
        == 201
    )
    file_id = upload(client, jsonl(chat_rows())).json()["id"]
    cases: list[tuple[str, Any, str]] = [
        (
            "/v1/chat/completions",
            chat(base, messages=[{"role": "user", "content": LONE}]),
            "messages.0.content",
        ),
        (
            "/v1/chat/completions",
            chat(
                base, messages=[{"role": "user", "content": [{"type": "text", "text": "a" + LONE}]}]
            ),
            "messages.0.content.0.text",
        ),
        ("/v1/completions", {"model": base, "prompt": ["ok", LONE]}, "prompt.1"),
        (
            "/v1/chat/completions",
            chat("tmpl:sentiment", variables={"tone": LONE}),
            "variables.tone",
        ),
        ("/v1/chat/completions", chat("tmpl:sentiment", variables={LONE: "x"}), "variables"),
        ("/v1/templates", {"name": "t2", "instruction": "{{ input }}" + LONE}, "instruction"),
        (
            "/v1/templates",
            {
                "name": "t2",
                "instruction": "{{ input }}",
                "examples": [{"input": LONE, "output": "y"}],
            },
            "examples.0.input",
        ),
        ("/v1/templates/sentiment/render", {"input": LONE, "variables": {"tone": "x"}}, "input"),
        (
            "/v1/templates/sentiment/render",
            {"input": "x", "variables": {"tone": [LONE]}},
            "variables.tone.0",
        ),
        ("/v1/evals", {"file_id": file_id, "variants": [base, "tmpl:" + LONE]}, "variants.1"),
        ("/v1/aliases", {"name": "al", "targets": [{"model": LONE}]}, "targets.0.model"),
        (
            "/v1/fine_tuning/jobs",
            {"model": base, "training_file": file_id, "suffix": LONE},
            "suffix",
        ),
        (
            "/v1/fine_tuning/jobs",
            {"model": base, "training_file": file_id, "metadata": {"k": LONE}},
            "metadata.k",
        ),
    ]
    for url, body, param in cases:
        error = assert_error(post_json(client, url, body), 400, param, "invalid_text")
        assert "surrogate" in error["message"]
    assert client.get("/v1/templates/t2").status_code == 404  # nothing was stored


# -- NUL characters (hardening issue, item 10) ------------------------------------------------
# PostgreSQL's text columns cannot hold U+0000 (psycopg refuses it in any parameter), so each
# of these was a 500 on PostgreSQL while SQLite stored it. Now both refuse it at the edge,
# identically, with the path of the field.
NUL = "\x00"


def nul_body_cases(client) -> list[tuple[str, str, Any, str]]:
    base = client.app.state.engine.name
    file_id = upload(client, jsonl(chat_rows())).json()["id"]
    job = {"model": base, "training_file": file_id}
    template = {"name": "t2", "instruction": "{{ input }}"}
    return [
        ("POST", "/v1/templates", {**template, "name": "t" + NUL}, "name"),
        ("POST", "/v1/templates", {**template, "instruction": "{{ input }}" + NUL}, "instruction"),
        ("POST", "/v1/templates", {**template, "system_prompt": NUL}, "system_prompt"),
        (
            "POST",
            "/v1/templates",
            {**template, "examples": [{"input": "x", "output": "y" + NUL}]},
            "examples.0.output",
        ),
        (
            "POST",
            "/v1/templates",
            {**template, "variables": {"tone": "a" + NUL}},
            "variables.tone",
        ),
        ("POST", "/v1/templates/sentiment/versions", {"instruction": NUL}, "instruction"),
        ("PUT", "/v1/templates/sentiment/tags/prod", {"version": 1, "x": NUL}, "x"),
        ("POST", "/v1/aliases", {"name": "al" + NUL, "targets": [{"model": base}]}, "name"),
        ("POST", "/v1/aliases", {"name": "al", "targets": [{"model": NUL}]}, "targets.0.model"),
        ("POST", "/v1/fine_tuning/jobs", {**job, "suffix": "s" + NUL}, "suffix"),
        ("POST", "/v1/fine_tuning/jobs", {**job, "metadata": {"k": NUL}}, "metadata.k"),
        ("POST", "/v1/fine_tuning/jobs", {**job, "metadata": {NUL: "v"}}, "metadata"),
        ("POST", "/v1/evals", {"file_id": file_id, "variants": [base, NUL]}, "variants.1"),
        ("POST", "/v1/admin/keys", {"name": "k" + NUL}, "name"),
        ("POST", "/v1/chat/completions", chat("al" + NUL), "model"),
    ]


def nul_refusal_problems(response, param: str) -> list[str]:
    """What is wrong with `response`, for a request with NUL in the field `param`."""
    body = response.json() if response.content else {}
    error = (body.get("error") if isinstance(body, dict) else None) or {}
    expected = (400, param, "invalid_text")
    got = (response.status_code, error.get("param"), error.get("code"))
    if got != expected or "NUL" not in error.get("message", ""):
        return [f"{response.request.method} {response.request.url.path}: {got}"]
    return []


@pytest.mark.both_databases
def test_nul_characters_in_bodies_are_refused_on_both_databases(client) -> None:
    assert create(client).status_code == 201
    problems: list[str] = []
    for method, url, body, param in nul_body_cases(client):
        r = client.request(
            method, url, content=json.dumps(body), headers={"content-type": "application/json"}
        )
        problems += nul_refusal_problems(r, param)
    assert problems == [], "\n".join(problems)
    names = [t["name"] for t in client.get("/v1/templates").json()["data"]]
    assert names == ["sentiment"]  # nothing else was stored
    assert client.get("/v1/aliases").json()["data"] == []


def upload_raw(client, filename: bytes, data: bytes):
    """An upload whose file name is sent as is (httpx would percent-encode a NUL in it)."""
    boundary = b"nul-boundary"
    body = b"".join(
        [
            b'--%s\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n' % boundary,
            b"fine-tune\r\n",
            b'--%s\r\nContent-Disposition: form-data; name="file"; ' % boundary,
            b'filename="%s"\r\nContent-Type: application/octet-stream\r\n\r\n' % filename,
            data + b"\r\n--%s--\r\n" % boundary,
        ]
    )
    content_type = "multipart/form-data; boundary=" + boundary.decode()
    return client.post("/v1/files", content=body, headers={"content-type": content_type})


@pytest.mark.both_databases
def test_nul_characters_in_paths_queries_and_forms_are_refused(client) -> None:
    assert create(client).status_code == 201
    problems: list[str] = []
    for url, param in [
        ("/v1/templates/a%00b", "name"),
        ("/v1/templates/sentiment/versions/1?x=%00", "x"),
        ("/v1/aliases/a%00", "name"),
        ("/v1/files?purpose=fine%00tune", "purpose"),
        ("/v1/files?after=file-%00", "after"),
        ("/v1/fine_tuning/jobs/ftjob-%00", "job_id"),
        ("/v1/evals/eval-%00", "eval_id"),
        ("/v1/models/tmpl:a%00", "model"),
    ]:
        problems += nul_refusal_problems(client.get(url), param)
    r = client.put("/v1/templates/sentiment/tags/p%00", json={"version": 1})
    problems += nul_refusal_problems(r, "tag")
    # A form field and an uploaded file's name.
    r = upload(client, jsonl(chat_rows()), purpose="fine-tune\x00")
    problems += nul_refusal_problems(r, "purpose")
    problems += nul_refusal_problems(upload_raw(client, b"a\x00.jsonl", jsonl(chat_rows())), "file")
    assert problems == [], "\n".join(problems)
    assert client.get("/v1/files").json()["data"] == []  # nothing was stored


def console_csrf(client, path: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert found is not None, f"no CSRF token on {path}"
    return found.group(1)


@pytest.mark.both_databases
def test_nul_characters_in_console_forms_are_refused(client) -> None:
    """The console's forms reach the same services: the same rule, shown on its error page."""
    token = console_csrf(client, "/console/login")
    r = client.post(
        "/console/login",
        data={"api_key": ADMIN_KEY, "csrf_token": token},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    token = console_csrf(client, "/console/templates/new")
    form = {"csrf_token": token, "name": "t3", "instruction": "{{ input }}\x00", "rule": "all"}
    r = client.post("/console/templates", data=form, follow_redirects=False)
    assert r.status_code == 400, r.text
    assert "NUL" in r.text
    assert client.get("/v1/templates/t3").status_code == 404  # nothing was stored
