"""Validating and running graders: the one implementation the grader endpoints, evaluations
and fine-tuning call. Run-time failures (a grader that raises, loops, a judge that fails) are
not exceptions: they score 0 with `metadata.errors` saying what happened."""

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from app.graders import multi, python_sandbox, similarity
from app.graders.model_judge import Judge, JudgeFailed, judge_request, read_answer
from app.graders.python_sandbox import SandboxLimits
from app.graders.results import ErrorFlags, GraderRunResponse, RunMetadata, TokenUsage
from app.graders.schemas import (
    Grader,
    LabelModelGrader,
    MultiGrader,
    PythonGrader,
    ScoreModelGrader,
    StringCheckGrader,
    TextSimilarityGrader,
    parse_grader,
)
from app.graders.string_check import string_check
from app.graders.templating import VariableError, render


def validate_grader(raw: Any, judge: Judge | None = None, param: str = "grader") -> Grader:
    """The grader, or a 400 pointing into the request: its shape and templates, then what it
    needs from this host (the metric's library, the sandbox, a judge model the tenant has)."""
    grader = parse_grader(raw, param)
    _check_host(grader, judge, param)
    return grader


def _check_host(grader: Grader, judge: Judge | None, param: str) -> None:
    if isinstance(grader, MultiGrader):
        for name, sub in grader.graders.items():
            _check_host(sub, judge, f"{param}.graders.{name}")
        multi.check_formula(
            grader.calculate_output, set(grader.graders), f"{param}.calculate_output"
        )
    elif isinstance(grader, TextSimilarityGrader):
        similarity.check_available(grader.evaluation_metric, f"{param}.evaluation_metric")
    elif isinstance(grader, PythonGrader):
        python_sandbox.check_available(f"{param}.type")
    elif isinstance(grader, ScoreModelGrader | LabelModelGrader) and judge is not None:
        judge.check_model(grader.model, f"{param}.model")


def sample_from_text(text: str) -> dict[str, Any]:
    """The `sample` namespace for an answer given as text: `output_json` is the text parsed
    as JSON where it is a JSON object or array (OpenAI: "if valid JSON"), else None."""
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested past json's depth
        parsed = None
    return {
        "output_text": text,
        "output_json": parsed if isinstance(parsed, dict | list) else None,
        "output_tools": [],
        "choices": [],
    }


@dataclass
class Graded:
    score: float
    errors: ErrorFlags = field(default_factory=ErrorFlags)
    sub_scores: dict[str, float] = field(default_factory=dict)
    usage: dict[str, TokenUsage] = field(default_factory=dict)
    sampled_model_name: str | None = None


async def grade(
    grader: Grader,
    sample: dict[str, Any],
    item: Any,
    judge: Judge | None = None,
    limits: SandboxLimits | None = None,
) -> Graded:
    """One grader on one sample and item; never raises for the grader's own failures."""
    context = {"sample": sample, "item": item if item is not None else {}}
    if isinstance(grader, MultiGrader):
        return await _grade_multi(grader, sample, context, judge, limits)
    try:
        return await _grade_single(grader, context, judge, limits)
    except VariableError as exc:
        errors = ErrorFlags()
        if exc.sample_parse:
            errors.sample_parse_error = True
        else:
            errors.invalid_variable_error = True
        return Graded(0.0, errors)
    except RecursionError:  # a value nested too deep to write out as text
        return Graded(0.0, ErrorFlags(other_error=True))


async def _grade_multi(
    grader: MultiGrader,
    sample: dict[str, Any],
    context: dict[str, Any],
    judge: Judge | None,
    limits: SandboxLimits | None,
) -> Graded:
    result = Graded(0.0)
    for name, sub in grader.graders.items():
        graded = await grade(sub, sample, context["item"], judge, limits)
        result.sub_scores[name] = graded.score
        result.errors.merge(graded.errors)
        for model, usage in graded.usage.items():
            result.usage.setdefault(model, TokenUsage()).add(
                usage.prompt_tokens, usage.completion_tokens
            )
        result.sampled_model_name = result.sampled_model_name or graded.sampled_model_name
    try:
        result.score = multi.evaluate(grader.calculate_output, result.sub_scores)
    except multi.FormulaError:
        result.errors.formula_parse_error = True
    return result


async def _grade_single(
    grader: Grader, context: dict[str, Any], judge: Judge | None, limits: SandboxLimits | None
) -> Graded:
    if isinstance(grader, StringCheckGrader):
        text, reference = render(grader.input, context), render(grader.reference, context)
        return Graded(string_check(grader.operation, text, reference))
    if isinstance(grader, TextSimilarityGrader):
        text, reference = render(grader.input, context), render(grader.reference, context)
        metric = grader.evaluation_metric
        if similarity.unavailable_reason(metric) is not None:
            return Graded(0.0, ErrorFlags(other_error=True))
        if metric == "cosine":  # a model forward pass: off the event loop
            return Graded(await asyncio.to_thread(similarity.similarity, metric, text, reference))
        # The string metrics take microseconds: a thread hop would cost more than the metric
        # (bench/graders.py: fuzzy_match 1 us bare, 82 us through the hop).
        return Graded(similarity.similarity(metric, text, reference))
    if isinstance(grader, PythonGrader):
        return await _grade_python(grader, context, limits)
    if isinstance(grader, ScoreModelGrader | LabelModelGrader):
        return await _grade_with_model(grader, context, judge)
    raise TypeError(f"not a single grader: {type(grader).__name__}")


async def _grade_python(
    grader: PythonGrader, context: dict[str, Any], limits: SandboxLimits | None
) -> Graded:
    run = await asyncio.to_thread(
        python_sandbox.run_python, grader.source, context["sample"], context["item"], limits
    )
    if run.score is not None:
        return Graded(run.score)
    errors = ErrorFlags()
    if run.kind == "server":
        errors.python_grader_server_error = True
        errors.python_grader_server_error_type = run.error
    else:
        errors.python_grader_runtime_error = True
        errors.python_grader_runtime_error_details = run.error
        errors.unresponsive_reward_error = run.kind == "timeout"
    return Graded(0.0, errors)


async def _grade_with_model(
    grader: ScoreModelGrader | LabelModelGrader, context: dict[str, Any], judge: Judge | None
) -> Graded:
    request = judge_request(grader, context)
    if judge is None:
        details = "no judge is wired for model graders here"
        return Graded(
            0.0,
            ErrorFlags(model_grader_server_error=True, model_grader_server_error_details=details),
        )
    try:
        answer = await judge(request)
    except JudgeFailed as exc:
        errors = ErrorFlags(
            model_grader_server_error=True, model_grader_server_error_details=str(exc)
        )
        return Graded(0.0, errors)
    usage = TokenUsage()
    usage.add(answer.prompt_tokens, answer.completion_tokens)
    graded = Graded(0.0, usage={grader.model: usage}, sampled_model_name=answer.model)
    try:
        graded.score = read_answer(grader, answer.text)
    except ValueError:
        graded.errors.model_grader_parse_error = True
    return graded


async def run_grader(
    grader: Grader,
    model_sample: str,
    item: Any,
    judge: Judge | None = None,
    limits: SandboxLimits | None = None,
) -> GraderRunResponse:
    """`POST /v1/fine_tuning/alpha/graders/run`: the reward with OpenAI's metadata."""
    started = time.perf_counter()
    graded = await grade(grader, sample_from_text(model_sample), item, judge, limits)
    total = sum(u.total_tokens for u in graded.usage.values()) if graded.usage else None
    scores = (
        dict(graded.sub_scores) if isinstance(grader, MultiGrader) else {grader.name: graded.score}
    )
    return GraderRunResponse(
        reward=graded.score,
        metadata=RunMetadata(
            name=grader.name,
            type=grader.type,
            errors=graded.errors,
            execution_time=time.perf_counter() - started,
            scores=scores,
            token_usage=total,
            sampled_model_name=graded.sampled_model_name,
        ),
        sub_rewards=dict(graded.sub_scores),
        model_grader_token_usage_per_model=graded.usage,
    )
