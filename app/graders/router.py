"""POST /v1/fine_tuning/alpha/graders/validate and /run (OpenAI's shapes): HTTP only, plus
the judge that model graders call here: the tenant's own variants (base, `ft:`, `tmpl:`,
aliases) through the routing layer and the engine, the answer held to a JSON schema."""

import asyncio
from typing import Any

from fastapi import APIRouter
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.auth.dependencies import TenantDep
from app.db import SessionDep
from app.dependencies import EngineDep
from app.engine.errors import EngineError
from app.engine.protocol import InferenceEngine
from app.errors import APIError, BadRequest, ModelNotFound
from app.graders.model_judge import JudgeAnswer, JudgeFailed, JudgeRequest
from app.graders.results import GraderRunResponse, GraderValidateResponse
from app.graders.service import run_grader, validate_grader
from app.inference.prompting import prepare_chat
from app.inference.serving_chat import create_chat_completion
from app.protocol.chat import ChatCompletion, ChatCompletionRequest
from app.protocol.values import RequestModel
from app.routing.resolve import Variant, resolve

router = APIRouter(prefix="/v1/fine_tuning/alpha/graders", tags=["graders"])

JUDGE_TIMEOUT_S = 120.0


class GraderValidateRequest(RequestModel):
    grader: Any


class GraderRunRequest(RequestModel):
    grader: Any
    model_sample: str
    item: Any = None
    reference_answer: Any = None  # deprecated by OpenAI; accepted and unused


class EngineJudge:
    """A `Judge` on this service's engine, for one tenant."""

    def __init__(self, session: Session, tenant: str, engine: InferenceEngine) -> None:
        self.session, self.tenant, self.engine = session, tenant, engine

    def check_model(self, model: str, param: str) -> None:
        try:
            resolve(self.session, self.tenant, model, self.engine.name, count_alias=False)
        except ModelNotFound:
            raise BadRequest(
                f"{param}: the judge model '{model}' is not served here (judges are the "
                "base model, ft:, tmpl: variants and aliases; external endpoints are not "
                "supported yet).",
                param=param,
                code="model_not_found",
            ) from None

    def _prepare(self, req: ChatCompletionRequest) -> tuple[Variant, Any]:
        variant = resolve(self.session, self.tenant, req.model, self.engine.name)
        self.session.close()  # generation takes a while: give the connection back
        return variant, prepare_chat(self.engine, variant, req)

    async def __call__(self, request: JudgeRequest) -> JudgeAnswer:
        sampling = request.sampling
        req = ChatCompletionRequest(
            model=request.model,
            messages=request.messages,
            max_completion_tokens=request.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "grader_result", "schema": request.schema, "strict": True},
            },
        )
        try:
            variant, prepared = await run_in_threadpool(self._prepare, req)
            result = await asyncio.wait_for(
                create_chat_completion(self.engine, variant, req, prepared), JUDGE_TIMEOUT_S
            )
        except TimeoutError:
            raise JudgeFailed(f"the judge did not answer within {JUDGE_TIMEOUT_S:g} s") from None
        except (APIError, EngineError) as exc:
            raise JudgeFailed(str(getattr(exc, "message", exc))) from None
        assert isinstance(result, ChatCompletion)  # not a stream
        usage = result.usage
        return JudgeAnswer(
            text=result.choices[0].message.content or "",
            model=variant.model,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )


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
