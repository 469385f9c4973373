"""One page with every variant a tenant can call: base, templates, adapters, aliases."""

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.aliases import service as aliases
from app.console.web import ConsoleDep, ConsoleRoute, landing_page, redirect, render
from app.db import SessionDep
from app.dependencies import base_model_name
from app.finetune import service as finetune
from app.registry.repository import AdapterRepository
from app.templates import service as templates

router = APIRouter(route_class=ConsoleRoute)


def all_templates(session: SessionDep, tenant: str) -> list:
    page, has_more, after = [], True, None
    while has_more:
        batch, has_more = templates.list_page(session, tenant, after, 100)
        page.extend(batch)
        after = batch[-1].name if batch else None
    return [templates.read(session, templates.get(session, tenant, t.name)) for t in page]


@router.get("", response_class=HTMLResponse)
def root() -> Response:
    return redirect("/")


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, console: ConsoleDep, session: SessionDep) -> Response:
    if "manage" not in console.principal.scopes:  # e.g. an inference-only key
        return redirect(landing_page(console.principal.scopes))
    tenant = console.principal.tenant
    adapters = AdapterRepository(session, tenant).all_by_age()
    jobs = {
        a.job_id: finetune.to_read(finetune.get(session, tenant, a.job_id))
        for a in adapters
        if a.job_id
    }
    alias_rows = [aliases.read(session, a) for a in aliases.list_aliases(session, tenant)]
    return render(
        request,
        "overview.html",
        {
            "base": base_model_name(),
            "templates": all_templates(session, tenant),
            "adapters": adapters,
            "jobs": jobs,
            "aliases": alias_rows,
        },
        console=console,
    )
