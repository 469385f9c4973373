"""/v1/fine_tuning/jobs: OpenAI-compatible create, list, retrieve, cancel, events,
checkpoints, and adaptd's loss curve picture. HTTP only; the logic is in service.py."""

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.auth.dependencies import TenantDep
from app.charts.responses import SVG_RESPONSES, svg_response
from app.db import SessionDep
from app.dependencies import BaseModelNameDep
from app.finetune import service
from app.finetune.charts import loss_curve_svg
from app.finetune.schemas import CheckpointList, EventList, JobCreate, JobList, JobRead
from app.settings import get_settings

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["finetune"])

Limit = Annotated[int, Query(ge=1, le=1000)]


def _module_names(request: Request) -> set[str] | None:
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        return None  # checked again by the worker, which fails the job with a clear error
    return engine.lora_target_names()


@router.post("", response_model=JobRead)
def create_job(
    body: JobCreate,
    request: Request,
    principal: TenantDep,
    session: SessionDep,
    base: BaseModelNameDep,
) -> JobRead:
    settings = get_settings()
    row = service.create(
        session,
        principal.tenant,
        body,
        base_name=base,
        max_active=settings.max_active_jobs_per_tenant,
        module_names=_module_names(request),
        microbatch_tokens=settings.train_microbatch_tokens,
    )
    return service.to_read(row)


@router.get("", response_model=JobList)
def list_jobs(
    principal: TenantDep, session: SessionDep, after: str | None = None, limit: Limit = 20
) -> JobList:
    rows, has_more = service.list_page(session, principal.tenant, after=after, limit=limit)
    return JobList(data=[service.to_read(r) for r in rows], has_more=has_more)


@router.get("/{job_id}", response_model=JobRead)
def retrieve_job(job_id: str, principal: TenantDep, session: SessionDep) -> JobRead:
    return service.to_read(service.get(session, principal.tenant, job_id))


@router.post("/{job_id}/cancel", response_model=JobRead)
def cancel_job(job_id: str, principal: TenantDep, session: SessionDep) -> JobRead:
    return service.to_read(service.cancel(session, principal.tenant, job_id))


@router.get("/{job_id}/events", response_model=EventList)
def list_events(
    job_id: str,
    principal: TenantDep,
    session: SessionDep,
    after: str | None = None,
    limit: Limit = 20,
) -> EventList:
    rows, has_more = service.list_events(
        session, principal.tenant, job_id, after=after, limit=limit
    )
    return EventList(data=[service.event_to_read(r) for r in rows], has_more=has_more)


@router.get("/{job_id}/checkpoints", response_model=CheckpointList)
def list_checkpoints(
    job_id: str,
    principal: TenantDep,
    session: SessionDep,
    after: str | None = None,
    limit: Limit = 10,
) -> CheckpointList:
    rows, has_more = service.list_checkpoints(
        session, principal.tenant, job_id, after=after, limit=limit
    )
    data = [service.checkpoint_to_read(r) for r in rows]
    return CheckpointList(
        data=data,
        has_more=has_more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


@router.get("/{job_id}/loss.svg", response_class=Response, responses=SVG_RESPONSES, tags=["charts"])
def loss_curve(job_id: str, principal: TenantDep, session: SessionDep) -> Response:
    """The training (and validation) loss by step as an SVG chart; it grows while the job
    runs. adaptd's own: OpenAI has no such endpoint."""
    return svg_response(loss_curve_svg(session, service.get(session, principal.tenant, job_id)))
