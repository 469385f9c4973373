"""Runs one evaluation on the worker: claim the row, resolve the variants, run the labeled
examples of each variant through the engine, write the report.

All examples of a variant are in flight at once, so the engine batches them exactly as it
batches live traffic. Idempotent: a finished evaluation is left alone; a redelivered one that
was running starts over (its report is written only at the end).
"""

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.background.periodic import PeriodicThread
from app.db import get_sessionmaker
from app.engine.errors import EngineError
from app.engine.protocol import InferenceEngine, generate
from app.engine.structured import conforms
from app.errors import APIError
from app.evals import lifecycle
from app.evals.dataset import LabeledExample, load_labeled_examples
from app.evals.metrics import METRICS
from app.evals.report import Outcome, build_report
from app.inference.prompting import max_tokens_for, prepare_chat
from app.protocol.chat import ChatCompletionRequest, ChatMessage
from app.routing.resolve import Variant, alias_split, resolve

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSettings:
    max_tokens: int = 16
    temperature: float = 0.0
    seed: int | None = 0
    concurrency: int = 16


def run(eval_id: str, engine: InferenceEngine) -> None:
    claimed = lifecycle.claim(eval_id)
    if claimed is None:
        return
    names = claimed.variants
    gen = GenerationSettings(**claimed.generation)
    try:
        with get_sessionmaker()() as session:
            examples = load_labeled_examples(session, claimed.tenant, claimed.file_id)
            if claimed.limit:
                examples = examples[: claimed.limit]
            resolved = [
                per_example(
                    session, claimed.tenant, m, engine.name, len(examples), f"{eval_id}/{m}"
                )
                for m in names
            ]
    except Exception as exc:  # reported on the row, not raised
        _fail(eval_id, exc)
        return
    lifecycle.event(eval_id, f"Evaluating {len(examples)} examples on {len(names)} variants")
    # Touches the row while the worker is busy with it, so the reaper can tell a long
    # evaluation from a dead worker.
    with PeriodicThread("evaluation heartbeat", lambda: lifecycle.heartbeat(eval_id), 5.0):
        _run_variants(eval_id, engine, names, resolved, examples, claimed.metric, gen)


def per_example(
    session: Session, tenant: str, model: str, base_name: str, n: int, seed: str
) -> list[Variant]:
    """The concrete variant that answers each of `n` examples: `model` itself, or for an
    alias a pick per example by its weights, as live traffic would get (seeded by the
    evaluation, so a redelivered run picks the same)."""
    split = alias_split(session, tenant, model, base_name)
    if split is None:
        return [resolve(session, tenant, model, base_name, count_alias=False)] * n
    variants, weights = zip(*split, strict=True)
    return random.Random(seed).choices(variants, weights=weights, k=n)


def _run_variants(
    eval_id: str,
    engine: InferenceEngine,
    names: list[str],
    resolved: list[list[Variant]],
    examples: list[LabeledExample],
    metric: str,
    gen: GenerationSettings,
) -> None:
    try:
        outcomes = {}
        for i, (name, variant) in enumerate(zip(names, resolved, strict=True)):
            outcomes[name] = asyncio.run(run_variant(engine, variant, examples, metric, gen))
            correct = sum(o.correct for o in outcomes[name])
            lifecycle.event(
                eval_id,
                f"Variant {i + 1}/{len(names)} done: {name}",
                {"variant": name, "correct": correct, "n": len(examples)},
            )
        report = build_report(
            names, [{"input": ex.input, "expected": ex.expected} for ex in examples], outcomes
        )
    except Exception as exc:
        log.exception("evaluation %s failed", eval_id)
        _fail(eval_id, exc)
        return
    lifecycle.succeed(eval_id, report)
    lifecycle.event(
        eval_id, "Evaluation succeeded", {"recommendation": report["recommendation"]["variant"]}
    )


def _fail(eval_id: str, exc: Exception) -> None:
    message = lifecycle.fail(eval_id, exc)
    lifecycle.event(eval_id, f"Evaluation failed: {message}")


async def run_variant(
    engine: InferenceEngine,
    variants: Variant | Sequence[Variant],
    examples: list[LabeledExample],
    metric: str,
    settings: GenerationSettings,
) -> list[Outcome]:
    """`variants`: one for every example, or one per example (an alias's picks)."""
    score = METRICS[metric]
    gate = asyncio.Semaphore(settings.concurrency)
    if isinstance(variants, Variant):
        variants = [variants] * len(examples)

    async def one(example: LabeledExample, variant: Variant) -> Outcome:
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
                params = req.to_sampling_params(
                    prepared.defaults, max_tokens=budget, constraint=prepared.constraint
                )
                started = time.perf_counter()
                result = await generate(
                    engine,
                    prepared.token_ids,
                    params,
                    variant.adapter,
                    prefix_len=prepared.prefix_len,
                )
                latency = (time.perf_counter() - started) * 1000
            except (APIError, EngineError) as err:
                return Outcome(answer=None, correct=False, error=err.message, model=variant.model)
            return Outcome(
                model=variant.model,
                answer=result.text,
                correct=score(result.text, example.expected),
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                latency_ms=latency,
                # Under an output constraint (a template's default): does the answer parse?
                parses=(
                    conforms(prepared.constraint, result.text)
                    if prepared.constraint is not None
                    else None
                ),
            )

    pairs = zip(examples, variants, strict=True)
    return list(await asyncio.gather(*(one(ex, v) for ex, v in pairs)))
