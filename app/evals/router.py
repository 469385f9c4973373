from fastapi import APIRouter, Query, Response

from app.auth.dependencies import TenantDep
from app.broker import EVALUATE_TASK, enqueue
from app.charts.responses import SVG_RESPONSES, svg_response
from app.db import SessionDep
from app.dependencies import BaseModelNameDep
from app.evals import service
from app.evals.charts import accuracy_cost_svg
from app.evals.schemas import EvalCreate, EvalEventList, EvalList, EvalRead
from app.routing.resolve import variant_checks

router = APIRouter(prefix="/v1/evals", tags=["evals"])


@router.post("", response_model=EvalRead, status_code=201)
def create_eval(
    body: EvalCreate, principal: TenantDep, session: SessionDep, base: BaseModelNameDep
) -> EvalRead:
    check = variant_checks(session, principal.tenant, base)
    row = service.create(session, principal.tenant, body, check)
    enqueue(EVALUATE_TASK, row.id)  # after the commit, so the worker always finds the row
    return service.read(row)


@router.get("", response_model=EvalList)
def list_evals(
    principal: TenantDep,
    session: SessionDep,
    after: str | None = None,
    limit: int = Query(default=20, ge=1, le=100),
) -> EvalList:
    rows, has_more = service.list_page(session, principal.tenant, after, limit)
    return EvalList(data=[service.read(r) for r in rows], has_more=has_more)


@router.get("/{eval_id}", response_model=EvalRead)
def get_eval(eval_id: str, principal: TenantDep, session: SessionDep) -> EvalRead:
    return service.read(service.get(session, principal.tenant, eval_id))


@router.get("/{eval_id}/events", response_model=EvalEventList)
def eval_events(eval_id: str, principal: TenantDep, session: SessionDep) -> EvalEventList:
    return EvalEventList(data=service.events(session, principal.tenant, eval_id))


@router.get(
    "/{eval_id}/chart.svg", response_class=Response, responses=SVG_RESPONSES, tags=["charts"]
)
def eval_chart(eval_id: str, principal: TenantDep, session: SessionDep) -> Response:
    """Each variant's accuracy (95% interval) against its prompt tokens per request, as an
    SVG chart: the ICL-or-fine-tuning decision in one picture."""
    return svg_response(accuracy_cost_svg(service.get(session, principal.tenant, eval_id)))
