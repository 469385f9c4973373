"""One daemon thread that calls a function every few seconds: the job reaper and the two
heartbeats (fine-tuning jobs, evaluations) are each one of these."""

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class PeriodicThread:
    """Calls `tick` every `interval_s` seconds (a number, or a function read before each
    wait) until stopped, or until `tick` returns False. A tick that raises is logged and
    tried again next time: the database may be briefly down."""

    def __init__(
        self,
        name: str,
        tick: Callable[[], bool | object],
        interval_s: float | Callable[[], float],
        *,
        run_at_start: bool = False,
    ) -> None:
        self.name = name
        self._tick = tick
        self._interval = interval_s if callable(interval_s) else (lambda: interval_s)
        self._run_at_start = run_at_start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> "PeriodicThread":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> "PeriodicThread":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _loop(self) -> None:
        if self._run_at_start and not self._run_once():
            return
        while not self._stop.wait(self._interval()):
            if not self._run_once():
                return

    def _run_once(self) -> bool:
        try:
            return self._tick() is not False
        except Exception as exc:
            log.warning("%s failed: %s", self.name, type(exc).__name__)
            return True
