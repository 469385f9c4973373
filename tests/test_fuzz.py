"""Schemathesis against the service's own OpenAPI document: every operation, a valid key,
no 5xx, and every response matches the documented schema and status codes.

A bounded run in `make test` (FUZZ_EXAMPLES, default 8 per operation); `make fuzz` runs longer.
"""

import os

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
def test_api_fuzz(case, live_server: str) -> None:
    case.call_and_validate(
        base_url=live_server, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, checks=CHECKS
    )
