"""Aliases: create, repoint (targets and weights), history, roll back."""

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.aliases import service as aliases
from app.aliases.models import Alias
from app.aliases.schemas import AliasCreate, AliasTarget, AliasUpdate
from app.console.session import ConsoleSession
from app.console.variants import callable_models
from app.console.web import ConsoleDep, ConsoleRoute, FormConsoleDep, redirect, render
from app.db import SessionDep
from app.dependencies import base_model_name
from app.errors import APIError, BadRequest
from app.routing.resolve import model_kinds

router = APIRouter(route_class=ConsoleRoute)
TARGET_ROWS = 4


def _kinds(session: Session, tenant: str):
    return model_kinds(session, tenant, base_model_name())


def point_alias(session: Session, tenant: str, name: str, targets: list[AliasTarget]) -> Alias:
    """Repoint the alias, or create it when the tenant has none of that name."""
    try:
        aliases.get(session, tenant, name)
    except APIError:
        body = AliasCreate(name=name, targets=targets)
        return aliases.create(
            session, tenant, base_model_name(), body.name, body.targets, _kinds(session, tenant)
        )
    body = AliasUpdate(targets=targets)
    return aliases.repoint(session, tenant, name, body.targets, _kinds(session, tenant))


def _targets(models: list[str], weights: list[str]) -> list[AliasTarget]:
    targets = []
    for model, weight in zip(models, weights, strict=False):
        if model:
            try:
                targets.append(AliasTarget(model=model, weight=float(weight or 1)))
            except (ValueError, ValidationError):
                raise BadRequest(
                    f"The weight of '{model}' must be a number above 0.", param="weight"
                ) from None
    return targets


def _page(
    request: Request,
    console: ConsoleSession,
    session: Session,
    template: str,
    context: dict,
    status_code: int = 200,
) -> Response:
    tenant = console.principal.tenant
    models = [m for m in callable_models(session, tenant) if not _is_alias(session, tenant, m)]
    return render(
        request,
        template,
        {"models": models, "rows": TARGET_ROWS, "error": None, **context},
        console=console,
        status_code=status_code,
    )


def _is_alias(session: Session, tenant: str, model: str) -> bool:
    return any(a.name == model for a in aliases.list_aliases(session, tenant))


@router.get("/aliases", response_class=HTMLResponse)
def aliases_page(request: Request, console: ConsoleDep, session: SessionDep) -> Response:
    rows = [
        aliases.read(session, a) for a in aliases.list_aliases(session, console.principal.tenant)
    ]
    return _page(request, console, session, "aliases.html", {"aliases": rows, "name": ""})


@router.get("/aliases/{name}", response_class=HTMLResponse)
def alias_page(name: str, request: Request, console: ConsoleDep, session: SessionDep) -> Response:
    tenant = console.principal.tenant
    alias = aliases.read(session, aliases.get(session, tenant, name))
    history = aliases.history(session, tenant, name)
    return _page(
        request, console, session, "alias.html", {"alias": alias, "history": history[::-1]}
    )


async def _form_targets(request: Request) -> list[AliasTarget]:
    form = await request.form()
    models = [v for v in form.getlist("model") if isinstance(v, str)]
    weights = [v for v in form.getlist("weight") if isinstance(v, str)]
    return _targets(models, weights)


@router.post("/aliases")
async def create_alias(
    request: Request,
    console: FormConsoleDep,
    session: SessionDep,
    name: Annotated[str, Form()] = "",
) -> Response:
    tenant = console.principal.tenant
    try:
        targets = await _form_targets(request)
        body = AliasCreate(name=name.strip(), targets=targets)
        aliases.create(
            session, tenant, base_model_name(), body.name, body.targets, _kinds(session, tenant)
        )
    except (ValidationError, APIError) as exc:
        rows = [aliases.read(session, a) for a in aliases.list_aliases(session, tenant)]
        message = exc.message if isinstance(exc, APIError) else _validation_message(exc)
        return _page(
            request,
            console,
            session,
            "aliases.html",
            {"aliases": rows, "name": name, "error": message},
            status_code=400,
        )
    return redirect(f"/aliases/{body.name}")


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())


@router.post("/aliases/{name}")
async def repoint_alias(
    name: str, request: Request, console: FormConsoleDep, session: SessionDep
) -> Response:
    tenant = console.principal.tenant
    try:
        targets = await _form_targets(request)
        body = AliasUpdate(targets=targets)
        aliases.repoint(session, tenant, name, body.targets, _kinds(session, tenant))
    except (ValidationError, APIError) as exc:
        message = exc.message if isinstance(exc, APIError) else _validation_message(exc)
        alias = aliases.read(session, aliases.get(session, tenant, name))
        history = aliases.history(session, tenant, name)[::-1]
        context = {"alias": alias, "history": history, "error": message}
        return _page(request, console, session, "alias.html", context, status_code=400)
    return redirect(f"/aliases/{name}")


@router.post("/aliases/{name}/rollback")
def rollback_alias(
    name: str,
    console: FormConsoleDep,
    session: SessionDep,
    version: Annotated[int | None, Form()] = None,
) -> Response:
    tenant = console.principal.tenant
    aliases.rollback(session, tenant, name, version, _kinds(session, tenant))
    return redirect(f"/aliases/{name}")
