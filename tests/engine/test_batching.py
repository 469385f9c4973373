"""Dynamic and continuous batching across variants: one forward pass carries rows for the base
model and several adapters, and every row answers as if it had run alone."""

import asyncio
import time

import app.engine.adapters as adapters_module
from app.engine.requests import Delta, Finished
from tests.engine.helpers import (
    Job,
    LogitsRecorder,
    assert_same_greedy,
    reference_greedy,
    run_alone,
    run_together,
)


def mixed_jobs(adapters) -> list[Job]:
    a0, a1, a2 = adapters
    # Different prompt lengths (left padding) and max_tokens (rows leave at different steps).
    return [
        Job("The capital of France is", None, max_tokens=14),
        Job("Review: great film", a0, max_tokens=6),
        Job("Translate to French: hello, goodbye, thank you.", a1, max_tokens=20),
        Job("What is the capital of Italy?", None, max_tokens=3),
        Job("positive negative", a2, max_tokens=16),
        Job("Classify the sentiment. Review: terrible movie", a0, max_tokens=11),
    ]


def test_mixed_batch_matches_each_request_alone(make_engine, adapter_refs, monkeypatch) -> None:
    engine = make_engine(batch_wait_ms=300)
    recorder = LogitsRecorder(engine)
    jobs = mixed_jobs(adapter_refs)
    alone = run_alone(engine, jobs)
    alone_logits = [recorder.take(engine, j) for j in jobs]
    assert engine.stats.max_rows == 1  # the reference really ran one row at a time

    stacked = []
    real = adapters_module.stacked_lora_forward
    monkeypatch.setattr(
        adapters_module, "stacked_lora_forward", lambda *a: stacked.append(1) or real(*a)
    )
    batched = run_together(engine, jobs)
    # One forward carried every row, across the base model and three adapters; its decode
    # steps took the stacked LoRA path.
    assert engine.stats.max_rows == len(jobs)
    assert engine.stats.mixed_forwards > 0
    assert stacked
    for job, a, b, steps in zip(jobs, alone, batched, alone_logits, strict=True):
        assert_same_greedy(engine, job, a, b, (steps, recorder.take(engine, job)))
    # The variants differ from one another, so a row on the wrong adapter would show.
    same_prompt = [Job(jobs[0].text, ref, max_tokens=14) for ref in [None, *adapter_refs]]
    answers = {r.token_ids for r in run_together(engine, same_prompt)}
    assert len(answers) == len(same_prompt)


def test_rows_leave_when_done(make_engine, adapter_refs) -> None:
    engine = make_engine(batch_wait_ms=300)
    jobs = mixed_jobs(adapter_refs)
    results = run_together(engine, jobs)
    lengths = [r.completion_tokens for r in results]
    # Rows stop at their own max_tokens (or eos), not at the longest row's.
    assert lengths == [len(r.token_ids) for r in results]
    for job, r in zip(jobs, results, strict=True):
        assert r.completion_tokens <= job.max_tokens
        assert r.finish_reason in ("stop", "length")
    assert len(set(lengths)) > 1
    # Decode forwards ran once per step of the longest row, not once per row per step.
    assert engine.stats.forwards <= max(lengths) + 1


def test_new_requests_join_a_running_batch(make_engine, adapter_refs) -> None:
    engine = make_engine(batch_wait_ms=0)
    recorder = LogitsRecorder(engine)
    first = [
        Job("The capital of France is", None, max_tokens=120),
        Job("Review: great film", adapter_refs[0], max_tokens=120),
    ]
    later = [
        Job("What is the capital of Italy?", adapter_refs[1], max_tokens=8),
        Job("positive negative", None, max_tokens=8),
        Job("Translate to French: hello", adapter_refs[2], max_tokens=8),
    ]
    alone = run_alone(engine, first + later)
    alone_logits = [recorder.take(engine, j) for j in first + later]

    async def scenario() -> list[Finished]:
        handles = [engine.submit(j.ids(engine), j.params(), j.adapter) for j in first]
        deadline = time.monotonic() + 60
        start = engine.stats.forwards
        while engine.stats.forwards < start + 4:  # prefill plus a few decode steps
            assert time.monotonic() < deadline
            await asyncio.sleep(0.001)
        handles += [engine.submit(j.ids(engine), j.params(), j.adapter) for j in later]
        return list(await asyncio.gather(*(h.result() for h in handles)))

    joins_before = engine.stats.joins
    together = asyncio.run(scenario())
    assert [r.completion_tokens for r in alone[:2]] == [120, 120]  # still running when others came
    assert engine.stats.joins - joins_before >= len(later)
    for job, a, b, steps in zip(first + later, alone, together, alone_logits, strict=True):
        assert_same_greedy(engine, job, a, b, (steps, recorder.take(engine, job)))


def test_seeded_sampling_is_independent_of_batch_neighbours(make_engine, adapter_refs) -> None:
    engine = make_engine(batch_wait_ms=300)
    jobs = [
        Job("The capital of France is", adapter_refs[0], max_tokens=10, temperature=0.9, seed=3),
        Job("Review: great film", None, max_tokens=10, temperature=0.7, seed=5),
        Job("positive negative", adapter_refs[1], max_tokens=10),
    ]
    alone = run_alone(engine, jobs)
    together = run_together(engine, jobs)
    assert engine.stats.max_rows == 3
    assert [r.token_ids for r in together[:2]] == [r.token_ids for r in alone[:2]]


def test_streaming_deltas_add_up_for_every_variant(make_engine, adapter_refs) -> None:
    engine = make_engine(batch_wait_ms=300)
    jobs = mixed_jobs(adapter_refs)

    async def scenario() -> list[tuple[str, Finished]]:
        handles = [engine.submit(j.ids(engine), j.params(), j.adapter) for j in jobs]

        async def drain(handle) -> tuple[str, Finished]:
            text, final = "", None
            async for event in handle.events():
                if isinstance(event, Delta):
                    text += event.text
                elif isinstance(event, Finished):
                    final = event
            assert final is not None
            return text, final

        return list(await asyncio.gather(*(drain(h) for h in handles)))

    streamed = asyncio.run(scenario())
    assert engine.stats.mixed_forwards > 0
    for text, final in streamed:
        assert text == final.text
    assert any(text for text, _ in streamed)


def test_answers_match_plain_forward_passes(make_engine, adapter_refs) -> None:
    """Ground truth: the engine's cached, batched decoding gives the tokens that recomputing
    the whole sequence at every step gives, for the base model and each adapter."""
    engine = make_engine(batch_wait_ms=300)
    jobs = mixed_jobs(adapter_refs)
    batched = run_together(engine, jobs)
    assert engine.stats.mixed_forwards > 0
    for job, result in zip(jobs, batched, strict=True):
        expected = Finished("", 0, 0, "", tuple(reference_greedy(engine, job)))
        assert_same_greedy(engine, job, expected, result)
