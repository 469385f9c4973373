"""Runs labeled examples through the engine for one variant, all in flight at once so the
engine batches them exactly as it batches live traffic."""

import asyncio
import time
from dataclasses import dataclass

from app.engine.engine import Engine
from app.errors import APIError
from app.evals.metrics import METRICS
from app.evals.report import Outcome
from app.inference.prompting import max_tokens_for, prepare_chat
from app.protocol.chat import ChatCompletionRequest, ChatMessage
from app.routing.resolve import Variant


@dataclass(frozen=True)
class LabeledExample:
    messages: list[dict[str, str]]  # the conversation up to (not including) the answer
    expected: str

    @property
    def input(self) -> str:
        users = [m["content"] for m in self.messages if m["role"] == "user"]
        return users[-1] if users else ""


@dataclass(frozen=True)
class GenerationSettings:
    max_tokens: int = 16
    temperature: float = 0.0
    seed: int | None = 0
    concurrency: int = 16


async def run_variant(
    engine: Engine,
    variant: Variant,
    examples: list[LabeledExample],
    metric: str,
    settings: GenerationSettings,
) -> list[Outcome]:
    score = METRICS[metric]
    gate = asyncio.Semaphore(settings.concurrency)

    async def one(example: LabeledExample) -> Outcome:
        async with gate:
            try:
                req = ChatCompletionRequest(
                    model=variant.model,
                    messages=[ChatMessage(**m) for m in example.messages],
                    max_tokens=settings.max_tokens,
                    temperature=settings.temperature,
                    seed=settings.seed,
                )
                prepared = prepare_chat(engine, variant, req)
                budget = max_tokens_for(engine, req, len(prepared.token_ids), prepared.defaults)
                params = req.to_sampling_params(prepared.defaults, max_tokens=budget)
                started = time.perf_counter()
                result = await engine.generate(
                    prepared.token_ids, params, variant.adapter, prefix_len=prepared.prefix_len
                )
                latency = (time.perf_counter() - started) * 1000
            except APIError as err:
                return Outcome(answer=None, correct=False, error=err.message)
            return Outcome(
                answer=result.text,
                correct=score(result.text, example.expected),
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                latency_ms=latency,
            )

    return list(await asyncio.gather(*(one(ex) for ex in examples)))
