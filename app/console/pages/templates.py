"""Template editor: create a template or a new version, live preview, move tags."""

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.console import forms
from app.console.session import ConsoleSession
from app.console.variants import base_and_adapters
from app.console.web import ConsoleDep, ConsoleRoute, FormConsoleDep, redirect, render
from app.db import SessionDep
from app.dependencies import EngineDep, base_model_name
from app.engine.protocol import InferenceEngine
from app.errors import APIError, BadRequest
from app.routing.references import references_in
from app.routing.resolve import model_kinds
from app.templates import rendering
from app.templates import service as templates
from app.templates.schemas import TemplateCreate, TemplatePatch

router = APIRouter(route_class=ConsoleRoute)

BLANK = {
    "name": "",
    "model": "",
    "system_prompt": "",
    "instruction": "{{ input }}",
    "examples": [],
    "rule": "all",
    "k": "",
    "variables": "",
    "temperature": "",
    "max_tokens": "",
    "sample_input": "",
}


def _editor(
    request: Request,
    console: ConsoleSession,
    session: Session,
    values: dict,
    *,
    template=None,  # TemplateRead of an existing template
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "template_editor.html",
        {
            "values": values,
            "errors": errors or {},
            "template": template,
            "models": base_and_adapters(session, console.principal.tenant),
            "base": base_model_name(),
        },
        console=console,
        status_code=status_code,
    )


@router.get("/templates/new", response_class=HTMLResponse)
def new_template(request: Request, console: ConsoleDep, session: SessionDep) -> Response:
    return _editor(request, console, session, dict(BLANK))


@router.get("/templates/{name}", response_class=HTMLResponse)
def edit_template(
    name: str,
    request: Request,
    console: ConsoleDep,
    session: SessionDep,
    version: int | None = None,
) -> Response:
    tenant = console.principal.tenant
    template = templates.read(session, templates.get(session, tenant, name))
    shown = template.latest
    if version is not None:
        row = templates.get_version(session, templates.get(session, tenant, name), version)
        shown = templates.version_read(name, row)
    return _editor(request, console, session, forms.values_of_version(shown), template=template)


@router.post("/templates")
async def create_template(
    request: Request, console: FormConsoleDep, session: SessionDep, engine: EngineDep
) -> Response:
    values = forms.template_values(await request.form())

    def save() -> str:
        body = TemplateCreate(name=values["name"], **forms.template_body(values))
        spec = forms.template_spec(values)
        tenant = console.principal.tenant
        kinds = model_kinds(session, tenant, base_model_name())
        return templates.create(session, tenant, engine, body.name, spec, kinds).name

    try:
        name = await run_in_threadpool(save)
    except (ValidationError, APIError) as exc:
        errors = forms.field_errors(exc)
        return _editor(request, console, session, values, errors=errors, status_code=400)
    return redirect(f"/templates/{name}")


@router.post("/templates/{name}/versions")
async def add_version(
    name: str, request: Request, console: FormConsoleDep, session: SessionDep, engine: EngineDep
) -> Response:
    tenant = console.principal.tenant
    values = forms.template_values(await request.form())
    values["name"] = name

    def save() -> None:
        patch = TemplatePatch(**forms.template_body(values))
        templates.add_version(
            session, tenant, engine, name, patch, model_kinds(session, tenant, base_model_name())
        )

    try:
        await run_in_threadpool(save)
    except (ValidationError, APIError) as exc:
        errors = forms.field_errors(exc)
        template = templates.read(session, templates.get(session, tenant, name))
        return _editor(
            request, console, session, values, template=template, errors=errors, status_code=400
        )
    return redirect(f"/templates/{name}")


@router.post("/templates/{name}/tags")
def move_tag(
    name: str,
    console: FormConsoleDep,
    session: SessionDep,
    tag: Annotated[str, Form()] = "",
    version: Annotated[int, Form()] = 0,
) -> Response:
    if version < 1:
        raise BadRequest("Pick a version for the tag.", param="version")
    templates.move_tag(session, console.principal.tenant, name, tag.strip(), version)
    return redirect(f"/templates/{name}")


@router.post("/templates/{name}/tags/{tag}/delete")
def remove_tag(name: str, tag: str, console: FormConsoleDep, session: SessionDep) -> Response:
    tenant = console.principal.tenant
    templates.remove_tag(session, tenant, name, tag, references_in(session, tenant))
    return redirect(f"/templates/{name}")


def _preview(values: dict, engine: InferenceEngine, session: Session, tenant: str) -> dict:
    """What /v1/templates/{name}/render would answer for this draft, unsaved."""
    spec = forms.template_spec(values)
    model = templates.validate(spec, engine, model_kinds(session, tenant, base_model_name()))
    session.close()
    draft = templates.draft_of(values["name"] or "draft", model, spec)
    # What the sample input would get as a chat request's one user message.
    sample = [{"role": "user", "content": values["sample_input"]}]
    request = rendering.TemplateRequest(messages=sample)
    built = rendering.prepare(engine.tokenizer, engine.context_window, draft, request)
    errors: dict[str, str] = {}
    if values["name"]:  # checked as saving would; an empty one is not typed yet
        try:
            TemplateCreate(name=values["name"], **forms.template_body(values))
        except ValidationError as exc:
            errors = forms.field_errors(exc)
    return {
        "errors": errors,
        "prompt": built.text,
        "prompt_tokens": len(built.token_ids),
        "examples_used": len(built.examples),
        "examples": built.examples,
    }


@router.post("/templates/preview")
async def preview(
    request: Request, console: FormConsoleDep, session: SessionDep, engine: EngineDep
) -> Response:
    values = forms.template_values(await request.form())
    try:
        result = await run_in_threadpool(
            _preview, values, engine, session, console.principal.tenant
        )
    except (ValidationError, APIError) as exc:
        return JSONResponse({"errors": forms.field_errors(exc)}, status_code=400)
    return JSONResponse(result)
