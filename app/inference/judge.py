"""The judge that model graders (`score_model`, `label_model`) call: the tenant's own variants
(base, `ft:`, `tmpl:`, aliases) through the routing layer and the engine, served as any chat
request is, the answer held to the JSON schema the grader asks for."""

import asyncio
from typing import Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.engine.errors import EngineError
from app.engine.protocol import InferenceEngine
from app.errors import APIError, BadRequest, ModelNotFound
from app.graders.model_judge import JudgeAnswer, JudgeFailed, JudgeRequest
from app.inference.prompting import prepare_chat
from app.inference.serving_chat import create_chat_completion
from app.protocol.chat import ChatCompletion, ChatCompletionRequest
from app.routing.resolve import Variant, resolve

JUDGE_TIMEOUT_S = 120.0


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
