"""The current-tenant dependency (`Authorization: Bearer <key>` -> Principal) and the
scope checks that every /v1 router is mounted with (see app/main.py)."""

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request, params

from app.auth.rate_limit import RateLimiter
from app.auth.service import Principal, Scope, authenticate
from app.db import SessionDep
from app.errors import AuthenticationError, InsufficientScope
from app.observability.context import note_actor


def current_principal(request: Request, session: SessionDep) -> Principal:
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    try:
        principal = _authenticate(request, session)
    except AuthenticationError:
        # A request without a valid key has no key's bucket: it draws on its client
        # address's, so a stream of wrong keys is throttled (429) like any other traffic.
        if limiter is not None:
            limiter.check(f"address:{request.client.host if request.client else '-'}")
        raise
    if limiter is not None:
        limiter.check(principal.key_id)
    request.state.principal = principal
    note_actor(principal.key_id)
    return principal


def _authenticate(request: Request, session: SessionDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthenticationError(
            "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key"
        )
    try:
        return authenticate(session, key.strip())
    finally:
        # Give the connection back at once: most requests need no other query, and a
        # connection held across a long generation would starve the pool.
        session.close()


TenantDep = Annotated[Principal, Depends(current_principal)]

_checks: dict[str, Callable[[Principal], Principal]] = {}


def scope_check(scope: Scope) -> Callable[[Principal], Principal]:
    """The dependency that refuses keys without `scope` (403 insufficient_scope). One function
    per scope, so FastAPI runs it once per request however often it is named."""
    if scope not in _checks:

        def check(principal: TenantDep) -> Principal:
            if scope not in principal.scopes:
                raise InsufficientScope(scope)
            return principal

        check.required_scope = scope  # type: ignore[attr-defined]
        _checks[scope] = check
    return _checks[scope]


def requires(scope: Scope) -> params.Depends:
    """For `include_router(..., dependencies=[requires("manage")])`."""
    return Depends(scope_check(scope))


AdminDep = Annotated[Principal, Depends(scope_check("admin"))]
