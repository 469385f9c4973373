from fastapi import APIRouter, Response

from app.aliases import service
from app.aliases.schemas import (
    AliasCreate,
    AliasHistory,
    AliasList,
    AliasRead,
    AliasRollback,
    AliasUpdate,
)
from app.auth.dependencies import TenantDep
from app.db import SessionDep
from app.dependencies import BaseModelNameDep
from app.routing.references import references_in
from app.routing.resolve import model_kinds

router = APIRouter(prefix="/v1/aliases", tags=["aliases"])


@router.post("", response_model=AliasRead, status_code=201)
def create_alias(
    body: AliasCreate, principal: TenantDep, session: SessionDep, base: BaseModelNameDep
) -> AliasRead:
    alias = service.create(
        session,
        principal.tenant,
        base,
        body.name,
        body.targets,
        model_kinds(session, principal.tenant, base),
    )
    return service.read(session, alias)


@router.get("", response_model=AliasList)
def list_aliases(principal: TenantDep, session: SessionDep) -> AliasList:
    return AliasList(
        data=[service.read(session, a) for a in service.list_aliases(session, principal.tenant)]
    )


@router.get("/{name}", response_model=AliasRead)
def get_alias(name: str, principal: TenantDep, session: SessionDep) -> AliasRead:
    return service.read(session, service.get(session, principal.tenant, name))


@router.put("/{name}", response_model=AliasRead)
def repoint_alias(
    name: str, body: AliasUpdate, principal: TenantDep, session: SessionDep, base: BaseModelNameDep
) -> AliasRead:
    alias = service.repoint(
        session,
        principal.tenant,
        name,
        body.targets,
        model_kinds(session, principal.tenant, base),
    )
    return service.read(session, alias)


@router.post("/{name}/rollback", response_model=AliasRead)
def rollback_alias(
    name: str,
    body: AliasRollback,
    principal: TenantDep,
    session: SessionDep,
    base: BaseModelNameDep,
) -> AliasRead:
    alias = service.rollback(
        session,
        principal.tenant,
        name,
        body.version,
        model_kinds(session, principal.tenant, base),
    )
    return service.read(session, alias)


@router.get("/{name}/history", response_model=AliasHistory)
def alias_history(name: str, principal: TenantDep, session: SessionDep) -> AliasHistory:
    return AliasHistory(data=service.history(session, principal.tenant, name))


@router.delete("/{name}", status_code=204)
def delete_alias(name: str, principal: TenantDep, session: SessionDep) -> Response:
    service.remove(session, principal.tenant, name, references_in(session, principal.tenant))
    return Response(status_code=204)
