"""Running jobs on an engine alone or together, and comparing greedy answers."""

import asyncio
from dataclasses import dataclass

import torch

from app.engine.adapters import BASE, AdapterRef, peft_label
from app.engine.engine import Engine
from app.engine.prompts import encode
from app.engine.protocol import generate
from app.engine.requests import Finished
from app.engine.sampling import SamplingParams
from app.engine.structured import OutputConstraint

# Below this, two logits count as a tie that float rounding may break either way.
TIE_TOLERANCE = 1e-4

FEW_SHOT = (
    "Classify the sentiment. Review: great film -> positive. Review: terrible movie -> "
    "negative. Review: what a great film -> positive. Review: a terrible review -> negative. "
)


@dataclass
class Job:
    text: str
    adapter: AdapterRef | None = None
    max_tokens: int = 12
    prefix_len: int = 0
    temperature: float = 0.0
    seed: int | None = None
    constraint: OutputConstraint | None = None

    def ids(self, engine: Engine) -> list[int]:
        return encode(engine.tokenizer, self.text)

    def params(self) -> SamplingParams:
        return SamplingParams(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            seed=self.seed,
            constraint=self.constraint,
        )


def few_shot_job(engine: Engine, question: str, adapter: AdapterRef | None = None) -> Job:
    """A prompt whose first tokens are FEW_SHOT, with prefix_len saying so."""
    prefix = len(encode(engine.tokenizer, FEW_SHOT))
    job = Job(FEW_SHOT + question, adapter, max_tokens=10, prefix_len=prefix)
    assert job.ids(engine)[:prefix] == encode(engine.tokenizer, FEW_SHOT)
    return job


async def _alone(engine: Engine, jobs: list[Job]) -> list[Finished]:
    return [
        await generate(engine, j.ids(engine), j.params(), j.adapter, prefix_len=j.prefix_len)
        for j in jobs
    ]


async def _together(engine: Engine, jobs: list[Job]) -> list[Finished]:
    handles = [
        engine.submit(j.ids(engine), j.params(), j.adapter, prefix_len=j.prefix_len) for j in jobs
    ]
    return list(await asyncio.gather(*(h.result() for h in handles)))


def run_alone(engine: Engine, jobs: list[Job]) -> list[Finished]:
    """One request at a time: each is the only row of its batch."""
    return asyncio.run(_alone(engine, jobs))


def run_together(engine: Engine, jobs: list[Job]) -> list[Finished]:
    """All submitted at once, so the scheduler sees them in one gather window."""
    return asyncio.run(_together(engine, jobs))


def reference_logits(engine: Engine, ids: list[int], adapter: AdapterRef | None) -> torch.Tensor:
    """Next-token logits for `ids`, computed outside the scheduler, unbatched."""
    label = peft_label(adapter.name) if adapter is not None else BASE
    with torch.inference_mode():
        x = torch.tensor([ids])
        if engine.adapters.has_adapters:
            out = engine.adapters.peft(input_ids=x, adapter_names=[label])
        else:
            assert adapter is None
            out = engine.model(input_ids=x)
    return out.logits[0, -1]


class LogitsRecorder:
    """Keeps every step's logits per row, keyed by (prompt, variant), from the scheduler."""

    def __init__(self, engine: Engine) -> None:
        assert engine.scheduler is not None
        self.steps: dict[tuple, list[torch.Tensor]] = {}
        engine.scheduler.observe_logits = self._observe

    def _observe(self, rows, logits: torch.Tensor) -> None:
        for row, row_logits in zip(rows, logits, strict=True):
            key = (tuple(row.prompt_ids), row.label)
            self.steps.setdefault(key, []).append(row_logits.detach().clone())

    def take(self, engine: Engine, job: Job) -> list[torch.Tensor]:
        label = peft_label(job.adapter.name) if job.adapter is not None else BASE
        return self.steps.pop((tuple(job.ids(engine)), label))


def assert_same_greedy(
    engine: Engine,
    job: Job,
    alone: Finished,
    batched: Finished,
    logits: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None,
) -> None:
    """Row for row the same greedy tokens, and (given `logits`, alone vs batched) every
    step's logits within TIE_TOLERANCE. Where tokens part, padding's float rounding must have
    flipped a near-tie: the two candidates' logits, computed unbatched on the same history,
    must be within TIE_TOLERANCE (anything else is a real batching bug)."""
    a, b = list(alone.token_ids), list(batched.token_ids)
    if a == b:
        if alone.finish_reason:  # a real engine answer, not a reference token list
            assert alone.text == batched.text
        if logits is not None:
            steps_alone, steps_batched = logits
            assert len(steps_alone) == len(steps_batched)
            for step, (x, y) in enumerate(zip(steps_alone, steps_batched, strict=True)):
                diff = float((x - y).abs().max())
                assert diff < TIE_TOLERANCE, f"step {step}: logits differ by {diff}"
        return
    k = next(
        i for i in range(min(len(a), len(b)) + 1) if i == len(a) or i == len(b) or a[i] != b[i]
    )
    logits = reference_logits(engine, job.ids(engine) + a[:k], job.adapter)
    eos = max(float(logits[e]) for e in engine.eos_ids)
    first = float(logits[a[k]]) if k < len(a) else eos
    second = float(logits[b[k]]) if k < len(b) else eos
    assert abs(first - second) < TIE_TOLERANCE, (
        f"rows part at token {k}: {a[k:]} vs {b[k:]}, logits {first} vs {second}"
    )


def reference_greedy(engine: Engine, job: Job) -> list[int]:
    """Greedy tokens from plain full-sequence forward passes (no cache, no batch, no engine
    bookkeeping): the ground truth the engine's answers are checked against."""
    ids = job.ids(engine)
    out: list[int] = []
    while len(out) < job.max_tokens:
        token = int(reference_logits(engine, ids + out, job.adapter).argmax())
        if token in engine.eos_ids:
            break
        out.append(token)
    return out
