"""/v1/templates: HTTP only; the logic is in service.py, prompt building in rendering.py."""

from fastapi import APIRouter, Query, Response

from app.auth.dependencies import TenantDep
from app.db import SessionDep
from app.dependencies import BaseModelNameDep, EngineDep
from app.errors import NotFound
from app.inference.prompting import max_tokens_for
from app.protocol.common import GenerationRequest
from app.protocol.values import Version
from app.routing.references import references_in
from app.routing.resolve import model_kinds
from app.templates import rendering, service
from app.templates.schemas import (
    RenderRequest,
    RenderResponse,
    TagMove,
    TemplateCreate,
    TemplateList,
    TemplatePatch,
    TemplateRead,
    TemplateSpec,
    TemplateVersionList,
    TemplateVersionRead,
)

router = APIRouter(prefix="/v1/templates", tags=["templates"])


@router.post("", response_model=TemplateRead, status_code=201)
def create_template(
    body: TemplateCreate,
    principal: TenantDep,
    session: SessionDep,
    engine: EngineDep,
    base: BaseModelNameDep,
) -> TemplateRead:
    spec = TemplateSpec(**body.model_dump(exclude={"name"}))
    template = service.create(
        session,
        principal.tenant,
        engine,
        body.name,
        spec,
        model_kinds(session, principal.tenant, base),
    )
    return service.read(session, template)


@router.get("", response_model=TemplateList)
def list_templates(
    principal: TenantDep,
    session: SessionDep,
    after: str | None = None,
    limit: int = Query(default=20, ge=1, le=100),
) -> TemplateList:
    page, has_more = service.list_page(session, principal.tenant, after, limit)
    return TemplateList(
        data=page,
        first_id=page[0].name if page else None,
        last_id=page[-1].name if page else None,
        has_more=has_more,
    )


@router.get("/{name}", response_model=TemplateRead)
def get_template(name: str, principal: TenantDep, session: SessionDep) -> TemplateRead:
    return service.read(session, service.get(session, principal.tenant, name))


@router.get("/{name}/versions", response_model=TemplateVersionList)
def list_versions(name: str, principal: TenantDep, session: SessionDep) -> TemplateVersionList:
    return TemplateVersionList(data=service.versions(session, principal.tenant, name))


@router.post("/{name}/versions", response_model=TemplateVersionRead, status_code=201)
def add_version(
    name: str,
    body: TemplatePatch,
    principal: TenantDep,
    session: SessionDep,
    engine: EngineDep,
    base: BaseModelNameDep,
) -> TemplateVersionRead:
    row = service.add_version(
        session,
        principal.tenant,
        engine,
        name,
        body,
        model_kinds(session, principal.tenant, base),
    )
    return service.version_read(name, row)


@router.get("/{name}/versions/{version}", response_model=TemplateVersionRead)
def get_version(
    name: str, version: Version, principal: TenantDep, session: SessionDep
) -> TemplateVersionRead:
    template = service.get(session, principal.tenant, name)
    return service.version_read(name, service.get_version(session, template, version))


@router.put("/{name}/tags/{tag}", response_model=TemplateRead)
def move_tag(
    name: str, tag: str, body: TagMove, principal: TenantDep, session: SessionDep
) -> TemplateRead:
    template = service.move_tag(session, principal.tenant, name, tag, body.version)
    return service.read(session, template)


@router.delete("/{name}/tags/{tag}", status_code=204)
def delete_tag(name: str, tag: str, principal: TenantDep, session: SessionDep) -> Response:
    service.remove_tag(
        session, principal.tenant, name, tag, references_in(session, principal.tenant)
    )
    return Response(status_code=204)


@router.delete("/{name}", status_code=204)
def delete_template(name: str, principal: TenantDep, session: SessionDep) -> Response:
    service.remove(session, principal.tenant, name, references_in(session, principal.tenant))
    return Response(status_code=204)


@router.post("/{reference}/render", response_model=RenderResponse)
def render_template(
    reference: str,
    body: RenderRequest,
    principal: TenantDep,
    session: SessionDep,
    engine: EngineDep,
) -> RenderResponse:
    """The exact prompt a request would get (`name`, `name@3`, `name@tag`); no generation."""
    tmpl = service.resolve_reference(session, principal.tenant, reference)
    if tmpl is None:
        raise NotFound(
            f"No template version '{reference}'.", param="reference", code="template_not_found"
        )
    session.close()
    mode = body.resolved_mode()
    if mode == "chat":
        conversation = (
            [m.as_template_dict() for m in body.messages]
            if body.messages is not None
            else [{"role": "user", "content": body.input or ""}]
        )
        request = rendering.TemplateRequest(
            messages=conversation, variables=body.variables, max_tokens=body.max_tokens
        )
    else:
        request = rendering.TemplateRequest(
            prompt=body.prompt if body.prompt is not None else body.input or "",
            variables=body.variables,
            max_tokens=body.max_tokens,
        )
    built = rendering.prepare(engine.tokenizer, engine.context_window, tmpl, request)
    # The same context check a served request gets: refuse what would not fit.
    check = GenerationRequest(model=f"tmpl:{tmpl.reference}", max_tokens=body.max_tokens)
    max_tokens_for(engine, check, len(built.token_ids), tmpl.params)
    return RenderResponse(
        model=f"tmpl:{tmpl.reference}",
        template=tmpl.name,
        version=tmpl.version,
        mode=mode,
        prompt=built.text,
        prompt_tokens=len(built.token_ids),
        prefix_tokens=built.prefix_len,
        examples_used=len(built.examples),
        examples=built.examples,
        messages=built.messages,
    )
