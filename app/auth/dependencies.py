"""The current-tenant dependency: `Authorization: Bearer <key>` -> Principal."""

from typing import Annotated

from fastapi import Depends, Request

from app.auth.rate_limit import RateLimiter
from app.auth.service import Principal, lookup
from app.db import SessionDep
from app.errors import AuthenticationError, PermissionDenied


def current_principal(request: Request, session: SessionDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthenticationError(
            "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key"
        )
    principal = lookup(session, key.strip())
    # Give the connection back at once: most requests need no other query, and a
    # connection held across a long generation would starve the pool.
    session.close()
    if principal is None:
        raise AuthenticationError("Incorrect API key provided.")
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        limiter.check(principal.key_id)
    request.state.principal = principal
    return principal


def admin_principal(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if not principal.is_admin:
        raise PermissionDenied("This endpoint needs an admin key.")
    return principal


TenantDep = Annotated[Principal, Depends(current_principal)]
AdminDep = Annotated[Principal, Depends(admin_principal)]
