from fastapi import APIRouter

from app.auth import service
from app.auth.dependencies import AdminDep
from app.auth.schemas import ApiKeyCreate, ApiKeyCreated
from app.db import SessionDep, unix_time

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post("/keys", response_model=ApiKeyCreated, status_code=201)
def create_key(body: ApiKeyCreate, session: SessionDep, _: AdminDep) -> ApiKeyCreated:
    row, key = service.create_key(session, body.tenant, body.name, body.is_admin)
    return ApiKeyCreated(
        id=row.id,
        tenant=row.tenant,
        name=row.name,
        prefix=row.prefix,
        is_admin=row.is_admin,
        created_at=unix_time(row.created_at),
        key=key,
    )
