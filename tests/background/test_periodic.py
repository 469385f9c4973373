"""The periodic thread the reaper and the heartbeats run on: it keeps going after a failing
tick, stops when its tick says so, and stops when asked."""

import threading

from app.background.periodic import PeriodicThread

SAFETY_S = 60  # only so that a broken helper fails instead of hanging the run


def test_failing_tick_is_retried_and_false_stops_the_thread() -> None:
    calls: list[int] = []
    done = threading.Event()

    def tick() -> bool:
        calls.append(len(calls))
        if len(calls) == 1:
            raise ConnectionError("database briefly down")
        if len(calls) == 3:
            done.set()
            return False  # e.g. the job is no longer this attempt's
        return True

    thread = PeriodicThread("test tick", tick, 0.01, run_at_start=True).start()
    assert done.wait(SAFETY_S)
    thread._thread.join(SAFETY_S)
    assert not thread._thread.is_alive()
    assert calls == [0, 1, 2]


def test_stop_ends_the_loop_and_interval_is_read_each_time() -> None:
    ticks = threading.Semaphore(0)
    intervals: list[float] = []

    def interval() -> float:
        intervals.append(0.01)
        return 0.01

    with PeriodicThread("test tick", ticks.release, interval) as thread:
        for _ in range(3):
            assert ticks.acquire(timeout=SAFETY_S)
    assert not thread._thread.is_alive()
    assert len(intervals) >= 3
