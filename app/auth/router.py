"""/v1/admin/keys: create, list, revoke and rotate API keys. HTTP only; see service.py for
who may manage which keys."""

from typing import Annotated

from fastapi import APIRouter, Query

from app.auth import service
from app.auth.dependencies import AdminDep
from app.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyDeleted,
    ApiKeyList,
    ApiKeyRead,
    ApiKeyRotate,
    from_unix,
)
from app.db import SessionDep

router = APIRouter(prefix="/v1/admin", tags=["admin"])

Limit = Annotated[int, Query(ge=1, le=1000)]
KeyId = Annotated[str, Query(max_length=64)]


@router.post("/keys", response_model=ApiKeyCreated, status_code=201)
def create_key(body: ApiKeyCreate, session: SessionDep, actor: AdminDep) -> ApiKeyCreated:
    row, key = service.create_key_as(
        session,
        actor,
        body.tenant,
        body.name,
        body.requested_scopes(),
        platform=body.platform,
        expires_at=from_unix(body.expires_at),
    )
    return ApiKeyCreated.of_new(row, key)


@router.get("/keys", response_model=ApiKeyList)
def list_keys(
    session: SessionDep,
    actor: AdminDep,
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    include_revoked: bool = False,
    after: KeyId | None = None,
    limit: Limit = 20,
) -> ApiKeyList:
    rows, has_more = service.list_keys(
        session, actor, tenant=tenant, include_revoked=include_revoked, after=after, limit=limit
    )
    return ApiKeyList(data=[ApiKeyRead.of(r) for r in rows], has_more=has_more)


@router.get("/keys/{key_id}", response_model=ApiKeyRead)
def get_key(key_id: str, session: SessionDep, actor: AdminDep) -> ApiKeyRead:
    return ApiKeyRead.of(service.get_key(session, actor, key_id))


@router.delete("/keys/{key_id}", response_model=ApiKeyDeleted)
def revoke_key(key_id: str, session: SessionDep, actor: AdminDep) -> ApiKeyDeleted:
    row = service.revoke_key(session, actor, key_id)
    return ApiKeyDeleted(id=row.id)


@router.post("/keys/{key_id}/rotate", response_model=ApiKeyCreated)
def rotate_key(
    key_id: str, session: SessionDep, actor: AdminDep, body: ApiKeyRotate | None = None
) -> ApiKeyCreated:
    grace = body.grace_period_s if body is not None else 0
    row, key = service.rotate_key(session, actor, key_id, grace)
    return ApiKeyCreated.of_new(row, key)
