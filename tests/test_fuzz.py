"""Schemathesis against the service's own OpenAPI document: every operation, a valid key,
no 5xx, and every response matches the documented schema and status codes.

Each generated case is then sent again with hostile values in place of its own (issue 17):
integers one past a 32-bit column or past 64 bits, and strings with a lone UTF-16 surrogate
(or "²", a digit to isdigit() but not to int()), in the JSON body, the query and integer path
parameters. These must be 4xx answers in the OpenAI envelope, never a 5xx.

A bounded run in `make test` (FUZZ_EXAMPLES, default 8 per operation); `make fuzz` runs longer.
"""

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ADMIN_KEY

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


HUGE_INTS = (2**31, 2**63)  # one past a 32-bit Integer column, one past 64 bits
LONE_SURROGATE = "\ud800"
MAX_VARIANTS = 6  # hostile copies of each generated case


def _leaves(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, (*path, i))
    else:
        yield path, value


def _replaced(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replaced(value[path[0]], path[1:], new)
    return copy


def _hostile(leaf: Any, count: int) -> Any:
    if isinstance(leaf, bool) or leaf is None:
        return None
    if isinstance(leaf, int | float):
        return HUGE_INTS[count % 2]
    if isinstance(leaf, str):
        return leaf + LONE_SURROGATE
    return None


# Random names mostly end in a 404 before a hostile value is looked at; the hostile copies
# name things that exist instead (made by _known_state), so the values travel further.
KNOWN = "fuzz"
KNOWN_PATH_PARAMS = {"name": KNOWN, "reference": KNOWN, "tag": "prod"}


def _known_state(http: httpx.Client, base: str) -> None:
    """A template and an alias named KNOWN (409 when they exist already)."""
    http.post("/v1/templates", json={"name": KNOWN, "instruction": "Q: {{ input }}"})
    http.post("/v1/aliases", json={"name": KNOWN, "targets": [{"model": base}]})


def _with_known_names(case, base: str) -> tuple[dict[str, Any], Any]:
    params = {k: KNOWN_PATH_PARAMS.get(k, v) for k, v in (case.path_parameters or {}).items()}
    body = case.body if case.media_type == "application/json" else None
    if not isinstance(body, dict | list | str | int | float | bytes):
        body = None  # schemathesis' NotSet: an optional body it chose to leave out
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        body = {**body, "model": base}
    return params, body


def _hostile_requests(case, base: str) -> Iterator[dict[str, Any]]:
    """Copies of the case's request (with known names), each with one value replaced by a
    hostile one."""
    path_parameters, body = _with_known_names(case, base)
    yield {"path_parameters": path_parameters, "body": body}  # known names, no hostile value
    count = 0
    for path, leaf in _leaves(body) if isinstance(body, dict | list) else ():
        new = _hostile(leaf, count)
        if new is not None and count < MAX_VARIANTS:
            count += 1
            yield {"path_parameters": path_parameters, "body": _replaced(body, path, new)}
    for name, value in (case.query or {}).items():
        if count < MAX_VARIANTS:
            count += 1
            hostile = str(HUGE_INTS[count % 2]) if isinstance(value, int) else f"{value}²"
            yield {
                "path_parameters": path_parameters,
                "body": body,
                "query": {**case.query, name: hostile},
            }
    for name, value in path_parameters.items():
        if isinstance(value, int) and not isinstance(value, bool) and count < MAX_VARIANTS:
            count += 1
            hostile = {**path_parameters, name: HUGE_INTS[count % 2]}
            yield {"path_parameters": hostile, "body": body}


def _encoded(body: Any) -> bytes | None:
    if body is None or isinstance(body, bytes):  # none, or raw bytes schemathesis made
        return body
    return json.dumps(body).encode()  # escapes a lone surrogate as \ud800, as clients do


def _send_hostile(case, base_url: str, base: str) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=120) as http:
        _known_state(http, base)
        for variant in _hostile_requests(case, base):
            path = case.path.format(**variant["path_parameters"])
            body = variant["body"]
            r = http.request(
                case.method,
                path,
                params=variant.get("query", case.query),
                content=_encoded(body),
                headers={"content-type": "application/json"} if body is not None else {},
            )
            assert r.status_code < 500, (case.method, path, variant, r.status_code, r.text)
            if r.status_code >= 400 and r.headers.get("content-type") == "application/json":
                assert set(r.json()["error"]) >= {"message", "type", "param", "code"}, r.text


def _openapi() -> dict:
    from app.main import create_app

    # The document depends only on the routes, not on settings or a loaded model.
    return create_app().openapi()


schema = schemathesis.openapi.from_dict(_openapi())


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@schema.parametrize()
@settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
def test_api_fuzz(case, app, live_server: str) -> None:
    case.call_and_validate(
        base_url=live_server, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, checks=CHECKS
    )
    _send_hostile(case, live_server, app.state.engine.name)
