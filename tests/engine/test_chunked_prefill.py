"""Chunked prefill: a long prompt is prefilled a chunk per step, between the running rows'
decode steps, with the same answers as one forward over it; a short request that comes while
a long prompt is prefilling gets its first token before that prompt's prefill is done."""

import asyncio
import threading

from app.engine.requests import Finished
from tests.engine.helpers import (
    Job,
    LogitsRecorder,
    assert_same_greedy,
    few_shot_job,
    run_alone,
    run_together,
)

CHUNK = 16
LONG = (
    "The capital of France is Paris. The capital of Italy is Rome. What is the capital of "
    "France? Translate to French: hello, goodbye, thank you. Review: great film -> positive. "
    "Review: terrible movie -> negative. You are a helpful assistant. Classify the sentiment. "
    "positive negative neutral great terrible movie film review question answer. "
)


def long_jobs(engine, adapter_refs) -> list[Job]:
    jobs = [
        Job(LONG + "The capital of", None, max_tokens=12),
        Job(LONG + LONG[:40] + " Review:", adapter_refs[0], max_tokens=12),
        # A template prefix longer than a chunk: stored once it is prefilled, then reused by
        # a long prompt (chunks after the cached prefix) and a short one (one forward).
        few_shot_job(engine, "Review: " + LONG[:120] + " ->", adapter_refs[1]),
        few_shot_job(engine, "Review: " + LONG[60:200] + " ->", adapter_refs[1]),
        few_shot_job(engine, "Review: " + LONG[60:80] + " ->", adapter_refs[1]),
    ]
    for job in jobs:
        assert len(job.ids(engine)) > 3 * CHUNK
    assert jobs[2].prefix_len > CHUNK
    return jobs


def test_chunked_prefill_gives_the_same_answers(make_engine, adapter_refs) -> None:
    whole = make_engine(batch_wait_ms=300, prefill_chunk=0, prefix_cache_entries=4)
    chunked = make_engine(batch_wait_ms=300, prefill_chunk=CHUNK, prefix_cache_entries=4)
    rec_whole, rec_chunked = LogitsRecorder(whole), LogitsRecorder(chunked)
    jobs = long_jobs(whole, adapter_refs)

    expected = run_alone(whole, jobs)
    assert whole.stats.prefill_chunks == 0
    got = run_alone(chunked, jobs)
    # Every long prompt really went in chunks, and the template prefix was reused.
    assert chunked.stats.prefill_chunks >= len(jobs[0].ids(chunked)) // CHUNK + 4
    assert chunked.prefixes.hits == 2 and chunked.prefixes.misses == 1
    assert chunked.stats.prompt_tokens_run == whole.stats.prompt_tokens_run
    for job, e, g in zip(jobs, expected, got, strict=True):
        logits = (rec_whole.take(whole, job), rec_chunked.take(chunked, job))
        assert_same_greedy(whole, job, e, g, logits)

    # Together with short rows: the long ones prefill while the short ones decode, join the
    # running batch when done, and still answer as they do alone.
    short = [
        Job("The capital of France is", None, max_tokens=30),
        Job("Review: great film", adapter_refs[0], max_tokens=30),
        Job("positive negative", adapter_refs[2], max_tokens=30),
    ]
    mixed = short + jobs
    expected = run_alone(whole, mixed)
    expected_logits = [rec_whole.take(whole, j) for j in mixed]
    got = run_together(chunked, mixed)
    for job, e, g, steps in zip(mixed, expected, got, expected_logits, strict=True):
        assert_same_greedy(whole, job, e, g, (steps, rec_chunked.take(chunked, job)))


def test_many_short_prompts_share_the_step_budget(make_engine) -> None:
    """Prompts each under a chunk but over it together are prefilled over several steps."""
    whole = make_engine(batch_wait_ms=300, prefill_chunk=0)
    chunked = make_engine(batch_wait_ms=300, prefill_chunk=CHUNK)
    jobs = [Job(LONG[i * 10 : i * 10 + 30], None, max_tokens=6) for i in range(5)]
    assert all(len(job.ids(whole)) <= CHUNK for job in jobs)
    assert sum(len(job.ids(whole)) for job in jobs) > 2 * CHUNK
    expected = run_together(whole, jobs)
    assert whole.stats.joins == 0  # one prefill for all of them
    got = run_together(chunked, jobs)
    assert chunked.stats.joins >= 2  # admitted over several steps, joining the running rows
    assert chunked.stats.prefill_chunks == 0  # none of them is long
    for job, e, g in zip(jobs, expected, got, strict=True):
        assert_same_greedy(whole, job, e, g)


def test_a_short_request_is_answered_while_a_long_prompt_prefills(make_engine) -> None:
    engine = make_engine(batch_wait_ms=0, prefill_chunk=CHUNK)
    scheduler = engine.scheduler
    assert scheduler is not None
    long = Job(LONG + LONG[:100], None, max_tokens=2)
    short = Job("The capital of France is", None, max_tokens=2)
    long_ids, short_ids = long.ids(engine), short.ids(engine)
    chunks_needed = -(-len(long_ids) // CHUNK)
    assert chunks_needed >= 8
    # Each row's first sampled token, in order, with how many long-prompt chunks had run.
    firsts: list[tuple[tuple[int, ...], int]] = []

    def observe(rows, logits) -> None:
        for row in rows:
            key = tuple(row.prompt_ids)
            if all(key != seen for seen, _ in firsts):
                firsts.append((key, engine.stats.prefill_chunks))

    # Hold the long prompt's first prefill forward until the short request is queued, so the
    # short one surely arrives while the long one is in its prefill.
    started, release = threading.Event(), threading.Event()
    forward = scheduler._forward

    def held_forward(ids, *args, **kwargs):
        if not started.is_set() and ids.shape[1] > 1:
            started.set()
            release.wait(120)
        return forward(ids, *args, **kwargs)

    scheduler.observe_logits = observe
    scheduler._forward = held_forward

    async def scenario() -> list[Finished]:
        first = engine.submit(long_ids, long.params())
        try:
            assert await asyncio.to_thread(started.wait, 120)
            second = engine.submit(short_ids, short.params())
        finally:
            release.set()
        return [await first.result(), await second.result()]

    results = asyncio.run(scenario())
    assert [r.completion_tokens for r in results] == [2, 2]
    order = [key for key, _ in firsts]
    assert order == [tuple(short_ids), tuple(long_ids)], "the short request waited"
    chunks_before_short = firsts[0][1]
    assert 1 <= chunks_before_short < chunks_needed  # it came mid-prefill
    assert firsts[1][1] == chunks_needed
