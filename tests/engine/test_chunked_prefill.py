"""Chunked prefill: a long prompt is prefilled a chunk per step, between the running rows'
decode steps, with the same answers as one forward over it; a short request that comes while
a long prompt is prefilling gets its first token before that prompt's prefill is done."""

import asyncio
import threading

from app.engine.chunked import MIN_CHUNK, QUIET_S, ChunkPacer
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

    def hold_first_prefill(ids) -> None:
        if not started.is_set() and ids.shape[1] > 1:
            started.set()
            release.wait(120)

    scheduler.observe_logits = observe
    scheduler.before_forward = hold_first_prefill

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


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_chunks_are_full_alone_and_one_decode_step_long_beside_other_requests() -> None:
    clock = FakeClock()
    pacer = ChunkPacer(512, clock)
    assert pacer.next_tokens() == 512  # nothing measured, nothing else running
    pacer.ran(512, 2.56)  # 5 ms a token at this point of the prompt
    assert pacer.next_tokens() == 512  # still alone
    pacer.other_work(step_s=0.4)  # a running row's decode step took 400 ms
    assert pacer.next_tokens() == 80  # 80 tokens x 5 ms: about that step again
    pacer.ran(80, 0.8)  # later chunks cost more a token (more positions to attend to)
    assert pacer.next_tokens() == 40
    pacer.ran(40, 4.0)
    assert pacer.next_tokens() == MIN_CHUNK  # never below it: the long prompt keeps moving
    clock.now += QUIET_S - 0.01
    assert pacer.next_tokens() == MIN_CHUNK  # a client's next request may come any moment
    clock.now += 0.02
    assert pacer.next_tokens() == 512  # quiet again: full chunks
    pacer.other_work()  # a prefill of other requests, no decode step measured this time
    pacer.ran(512, 0.0512)
    assert pacer.next_tokens() == 512  # 0.4 s is worth more than a full chunk here


def test_the_scheduler_runs_the_chunks_its_pacer_sizes(make_engine) -> None:
    """Each chunk is as long as the pacer says, and the pacer hears of every decode step
    and every chunk (its inputs), so a decode step's time sizes the next chunk."""
    engine = make_engine(batch_wait_ms=0, prefill_chunk=4 * CHUNK)
    scheduler = engine.scheduler
    assert scheduler is not None
    pacer = scheduler.pacer
    heard = {"steps": [], "chunks": []}
    other_work, ran = pacer.other_work, pacer.ran

    def on_other_work(step_s: float | None = None) -> None:
        if step_s is not None:
            heard["steps"].append(step_s)
        other_work(step_s)

    def on_ran(tokens: int, seconds: float) -> None:
        heard["chunks"].append(tokens)
        ran(tokens, seconds)

    pacer.other_work, pacer.ran = on_other_work, on_ran  # type: ignore[method-assign]
    pacer.next_tokens = lambda: 24  # type: ignore[method-assign]
    long = Job(LONG + LONG[:100], None, max_tokens=2)
    short = Job("The capital of France is", None, max_tokens=20)
    long_ids = long.ids(engine)

    async def scenario() -> None:
        first = engine.submit(short.ids(engine), short.params())
        second = engine.submit(long_ids, long.params())
        await asyncio.gather(first.result(), second.result())

    asyncio.run(scenario())
    assert sum(heard["chunks"]) == len(long_ids)
    assert all(n == 24 for n in heard["chunks"][:-1]) and 0 < heard["chunks"][-1] <= 24
    assert len(heard["steps"]) >= 15 and all(s > 0 for s in heard["steps"])
