"""Back-pressure (a bounded queue answers 503 with Retry-After) and cancellation (a client
that goes away frees its row at the next step)."""

import asyncio
import threading
import time

import pytest

from app.engine.errors import EngineOverloaded, InvalidInput
from app.engine.requests import Finished
from app.errors import engine_api_error
from tests.engine.helpers import Job, run_alone


def test_full_queue_refuses_with_retry_after(make_engine) -> None:
    engine = make_engine(start=False, max_queue=2)  # nothing drains the queue
    job = Job("The capital of France is", max_tokens=4)

    async def scenario() -> None:
        handles = [engine.submit(job.ids(engine), job.params()) for _ in range(2)]
        with pytest.raises(EngineOverloaded) as caught:
            engine.submit(job.ids(engine), job.params())
        err = engine_api_error(caught.value)  # what the client gets
        assert err.status_code == 503 and err.type == "server_error"
        assert err.code == "server_overloaded"
        assert err.headers == {"Retry-After": "1"}
        assert engine.queued == 2  # the refused request took no room
        # Once the engine runs, the queued requests are served and room frees up.
        engine.start()
        results = await asyncio.gather(*(h.result() for h in handles))
        assert all(r.completion_tokens == 4 for r in results)
        await engine.submit(job.ids(engine), job.params()).result()

    asyncio.run(scenario())


def test_in_memory_work_stays_bounded(make_engine) -> None:
    """However many clients push, the engine holds at most queue + batch + waiting rows."""
    engine = make_engine(max_queue=4, max_batch_size=2, batch_wait_ms=0)
    job = Job("Review: great film", max_tokens=40)

    async def scenario() -> tuple[int, int]:
        accepted, refused = [], 0
        for _ in range(30):
            try:
                accepted.append(engine.submit(job.ids(engine), job.params()))
            except EngineOverloaded:
                refused += 1
        await asyncio.gather(*(h.result() for h in accepted))
        return len(accepted), refused

    accepted, refused = asyncio.run(scenario())
    assert refused > 0
    assert accepted <= 4 + 2 + 2  # queue bound, running rows, one batch pulled to wait
    assert engine.stats.max_rows <= 2


def test_cancel_frees_the_row(make_engine) -> None:
    # One row only: the second request can run only once the first one's row is freed.
    engine = make_engine(max_batch_size=1, batch_wait_ms=0)
    long = Job("The capital of France is", max_tokens=200)
    short = Job("Review: great film", max_tokens=5)
    expected_short = run_alone(engine, [short])[0]

    async def scenario() -> tuple[Finished, Finished]:
        first = engine.submit(long.ids(engine), long.params())
        start = engine.stats.forwards
        deadline = time.monotonic() + 60
        while engine.stats.forwards < start + 3:  # it is generating
            assert time.monotonic() < deadline
            await asyncio.sleep(0.001)
        second = engine.submit(short.ids(engine), short.params())
        first.cancel()  # what the SSE stream does when the client disconnects
        return await first.result(), await second.result()

    cancelled, served = asyncio.run(scenario())
    assert cancelled.finish_reason == "cancelled"
    assert 0 < cancelled.completion_tokens < 200
    assert served.token_ids == expected_short.token_ids
    deadline = time.monotonic() + 60
    # The scheduler drops the row right after its last event.
    while engine.scheduler.rows or engine.scheduler.batch is not None:
        assert time.monotonic() < deadline
        time.sleep(0.001)


def test_cancelled_row_leaves_a_running_batch(make_engine) -> None:
    engine = make_engine(batch_wait_ms=300)
    jobs = [
        Job("The capital of France is", max_tokens=150),
        Job("Review: great film", max_tokens=30),
    ]
    expected = run_alone(engine, jobs[1:])[0]

    async def scenario() -> tuple[Finished, Finished, int]:
        handles = [engine.submit(j.ids(engine), j.params()) for j in jobs]
        deadline = time.monotonic() + 60
        while engine.stats.forwards < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.001)
        handles[0].cancel()
        while len(engine.scheduler.rows) == 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.001)
        rows_after_cancel = len(engine.scheduler.rows)
        return await handles[0].result(), await handles[1].result(), rows_after_cancel

    cancelled, other, rows_after = asyncio.run(scenario())
    assert cancelled.finish_reason == "cancelled"
    assert rows_after <= 1
    assert other.token_ids == expected.token_ids  # its neighbour's exit did not disturb it


def test_empty_prompt_is_refused(make_engine) -> None:
    engine = make_engine(start=False)

    async def scenario() -> None:
        from app.engine.sampling import SamplingParams

        with pytest.raises(InvalidInput) as caught:
            engine.submit([], SamplingParams())
        err = engine_api_error(caught.value)
        assert (err.status_code, err.code, err.param) == (400, "empty_prompt", "prompt")

    asyncio.run(scenario())


def test_engine_restarts_after_stop(make_engine) -> None:
    engine = make_engine(batch_wait_ms=0)
    job = Job("Review: great film", max_tokens=4)
    first = run_alone(engine, [job])[0]
    engine.stop()
    assert not engine.running
    engine.start()
    assert run_alone(engine, [job])[0].token_ids == first.token_ids


def test_engine_survives_a_closed_event_loop(make_engine) -> None:
    """A server that stops mid-stream closes its event loop under running rows: the
    scheduler drops those rows and keeps serving everyone else."""
    engine = make_engine()
    scheduler = engine.scheduler
    assert scheduler is not None
    job = Job("Review: great film", max_tokens=40)
    stepped, loop_closed, row_ended = threading.Event(), threading.Event(), threading.Event()
    ended: list[tuple[str, int]] = []  # the abandoned row's finish reason and tokens

    def hold_first_step(rows, logits) -> None:
        if not stepped.is_set():
            stepped.set()
            loop_closed.wait(120)  # its first token goes out only once nobody listens

    def record_end(row, reason: str) -> None:
        ended.append((reason, len(row.generated)))
        row_ended.set()

    scheduler.observe_logits = hold_first_step
    scheduler.observe_finish = record_end

    async def abandon() -> None:
        engine.submit(job.ids(engine), job.params())
        assert await asyncio.to_thread(stepped.wait, 120)  # the row is running

    try:
        asyncio.run(abandon())  # returns, and closes its loop, under the running row
    finally:
        loop_closed.set()
    # The scheduler delivered to the closed loop and dropped the row, long before its end.
    assert row_ended.wait(120), "the abandoned row never ended"
    reason, generated = ended[0]
    assert reason == "cancelled" and generated < job.max_tokens
    scheduler.observe_logits = scheduler.observe_finish = None

    async def serve() -> int:
        return (await engine.submit(job.ids(engine), job.params()).result()).completion_tokens

    assert asyncio.run(serve()) == 40
    assert engine.queued == 0
