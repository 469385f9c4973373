"""Label scores (the adaptd `label_logprobs` field): with a `choice` constraint and logprobs,
each label's total log-probability under each prompt, from one forced row per label and
prompt (on the vLLM engine, one single-step request per label token).

That work is the request's own, in one place for both engines: it is planned and bounded
before anything is queued (`MAX_LABEL_TOKENS`; its rows count toward `MAX_REQUEST_TOKENS`),
counted in `usage`, and run a few rows at a time (`LABEL_ROWS_IN_FLIGHT`), so a request
with hundreds of labels takes a few of the engine's queue slots and batch rows at once and
queues behind other requests' work instead of ahead of all of it."""

import asyncio
from dataclasses import dataclass

from app.engine.protocol import InferenceEngine
from app.engine.requests import Finished, RequestHandle
from app.engine.sampling import SamplingParams
from app.engine.structured import OutputConstraint
from app.errors import BadRequest, ContextLengthExceeded
from app.inference.rows import RequestRows
from app.settings import get_settings


@dataclass(frozen=True)
class LabelRow:
    prompt: int  # which prompt it scores under (an index into LabelPlan.prompts)
    label: str
    tokens: list[int]


@dataclass(frozen=True)
class LabelPlan:
    """Every label row of one request, before any is queued."""

    labels: list[str]
    prompts: list[tuple[list[int], int]]  # (token ids, prefix length) per prompt
    rows: list[LabelRow]
    param: str  # where the labels came from, for a 400 about them

    def sequences(self) -> list[tuple[int, int]]:
        """(prompt tokens, label tokens) per row: what each holds in the engine."""
        return [(len(self.prompts[r.prompt][0]), len(r.tokens)) for r in self.rows]

    @property
    def prompt_tokens(self) -> int:
        return sum(prompt for prompt, _ in self.sequences())

    @property
    def label_tokens(self) -> int:
        return sum(len(r.tokens) for r in self.rows)


def plan_labels(
    engine: InferenceEngine,
    constraint: OutputConstraint | None,
    logprobs: int | None,
    prompts: list[tuple[list[int], int]],
) -> LabelPlan | None:
    """The label rows a request would run (None: it asks for no label scores; a prompt's n
    choices share its scores). 400 when a label does not fit after a prompt, or when the
    request's label tokens (labels x their tokens x prompts) are over MAX_LABEL_TOKENS."""
    if constraint is None or constraint.kind != "choice" or logprobs is None:
        return None
    encoded = [
        (label, engine.tokenizer.encode(label, add_special_tokens=False))
        for label in constraint.choices
    ]
    longest = max(len(tokens) for _, tokens in encoded)
    for ids, _ in prompts:
        if len(ids) + longest > engine.context_window:
            label = next(label for label, tokens in encoded if len(tokens) == longest)
            raise ContextLengthExceeded(
                f"The label {label!r} does not fit in the context window after the prompt.",
                param=constraint.param,
            )
    rows = [LabelRow(i, label, tokens) for i in range(len(prompts)) for label, tokens in encoded]
    plan = LabelPlan(list(constraint.choices), prompts, rows, constraint.param or "logprobs")
    limit = get_settings().max_label_tokens
    if plan.label_tokens > limit:
        per_prompt = sum(len(tokens) for _, tokens in encoded)
        raise BadRequest(
            f"This request scores {len(encoded)} labels ({per_prompt} label tokens) under each "
            f"of {len(prompts)} prompts: {plan.label_tokens} label tokens, above this server's "
            f"limit of {limit} per request. Send fewer or shorter labels or fewer prompts, or "
            "leave out logprobs (the labels then only constrain the answer).",
            param=plan.param,
            code="too_many_label_tokens",
        )
    return plan


async def submit_with_labels(
    rows: RequestRows,
    jobs: list[tuple[list[int], SamplingParams]],
    plan: LabelPlan | None,
    prefix_len: int = 0,
) -> tuple[list[RequestHandle], list[dict[str, float]] | None]:
    """Both endpoints' submission: the answer rows at once, then the label rows (scored to
    the end, per prompt; None without a plan). The answers and the first label rows go in
    before this yields, so a full queue refuses the request before any response starts."""
    handles = rows.submit_all(jobs, prefix_len)
    labels = await score_labels(rows, plan) if plan is not None else None
    return handles, labels


async def score_labels(rows: RequestRows, plan: LabelPlan) -> list[dict[str, float]]:
    """Per prompt, each label's log-probability (summed over its tokens). At most
    LABEL_ROWS_IN_FLIGHT rows of the plan are in the engine at once; the next goes in as one
    finishes, behind whatever other requests queued meanwhile. The first ones are submitted
    before this yields, so a full queue refuses the request before any response starts.
    Rows still out when this fails or is cancelled are cancelled by the request's
    `RequestRows`, as every other row of it."""
    window = max(1, get_settings().label_rows_in_flight)
    todo = iter(plan.rows)
    out: dict[asyncio.Future[Finished], LabelRow] = {}
    scores: list[dict[str, float]] = [{} for _ in plan.prompts]

    def top_up() -> None:
        while len(out) < window and (row := next(todo, None)) is not None:
            ids, prefix_len = plan.prompts[row.prompt]
            params = SamplingParams(max_tokens=len(row.tokens), temperature=0.0, logprobs=0)
            handle = rows.submit(ids, params, prefix_len=prefix_len, forced_tokens=row.tokens)
            out[asyncio.ensure_future(handle.result())] = row

    try:
        top_up()
        while out:
            done, _ = await asyncio.wait(out, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                row = out.pop(future)
                result = future.result()  # a Failed row fails the request
                scores[row.prompt][row.label] = sum(e.logprob for e in result.logprobs or ())
            top_up()
    finally:
        for future in out:
            future.cancel()
    # The labels in the order the request gave them, whatever order they finished in.
    return [{label: per_prompt[label] for label in plan.labels} for per_prompt in scores]
