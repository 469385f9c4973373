"""POST /v1/fine_tuning/alpha/graders/validate and /run (OpenAI's shapes): HTTP only; model
graders judge through `inference.judge.EngineJudge`."""

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from app.auth.dependencies import TenantDep
from app.db import SessionDep
from app.dependencies import EngineDep
from app.graders.results import GraderRunResponse, GraderValidateResponse
from app.graders.service import run_grader, validate_grader
from app.inference.judge import EngineJudge
from app.protocol.values import RequestModel

router = APIRouter(prefix="/v1/fine_tuning/alpha/graders", tags=["graders"])


class GraderValidateRequest(RequestModel):
    grader: Any


class GraderRunRequest(RequestModel):
    grader: Any
    model_sample: str
    item: Any = None
    reference_answer: Any = None  # deprecated by OpenAI; accepted and unused


@router.post("/validate", response_model=GraderValidateResponse)
def validate(
    req: GraderValidateRequest, principal: TenantDep, session: SessionDep, engine: EngineDep
) -> GraderValidateResponse:
    judge = EngineJudge(session, principal.tenant, engine)
    grader = validate_grader(req.grader, judge)
    return GraderValidateResponse(grader=grader.model_dump(mode="json", exclude_none=True))


@router.post("/run", response_model=GraderRunResponse)
async def run(
    req: GraderRunRequest, principal: TenantDep, session: SessionDep, engine: EngineDep
) -> GraderRunResponse:
    judge = EngineJudge(session, principal.tenant, engine)
    grader = await run_in_threadpool(validate_grader, req.grader, judge)
    return await run_grader(grader, req.model_sample, req.item, judge)
