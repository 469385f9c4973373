"""Graceful shutdown under uvicorn: SIGTERM first turns /readyz to 503 while the API keeps
serving for SHUTDOWN_DRAIN_S (so a load balancer stops sending), then hands over to
uvicorn's own shutdown (stop listening, let requests and streams in flight finish), and
forces the exit if they are not done SHUTDOWN_GRACE_S later.

Uvicorn installs its signal handlers before the app starts; this wraps its SIGTERM handler.
Outside uvicorn's main thread (tests' in-thread servers, TestClient) it does nothing.
"""

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class GracefulShutdown:
    def __init__(self, state: Any, drain_s: float, grace_s: float) -> None:
        self.state = state
        self.drain_s = drain_s
        self.grace_s = grace_s
        self._uvicorn: Callable[[int, Any], None] | None = None
        state.draining = False

    def install(self) -> "GracefulShutdown":
        if threading.current_thread() is not threading.main_thread():
            return self
        previous = signal.getsignal(signal.SIGTERM)
        if callable(previous):  # uvicorn's Server.handle_exit
            self._uvicorn = previous
            signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def uninstall(self) -> None:
        if self._uvicorn is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._uvicorn)

    def _on_sigterm(self, sig: int, frame: Any) -> None:
        if self.state.draining:  # a second SIGTERM: no more waiting for the drain
            self._stop()
            return
        self.state.draining = True
        log.info(
            "SIGTERM: not ready; draining for %.1fs, then finishing requests in flight "
            "(at most %.1fs)",
            self.drain_s,
            self.grace_s,
        )
        self._later(self.drain_s, self._stop)

    def _stop(self) -> None:
        assert self._uvicorn is not None
        self._uvicorn(signal.SIGTERM, None)  # stop listening, wait for connections
        self._later(self.grace_s, self._force)

    def _force(self) -> None:
        log.warning("requests still in flight after SHUTDOWN_GRACE_S; exiting anyway")
        assert self._uvicorn is not None
        self._uvicorn(signal.SIGINT, None)  # uvicorn: a second signal forces the exit

    @staticmethod
    def _later(seconds: float, action: Callable[[], None]) -> None:
        timer = threading.Timer(max(0.0, seconds), action)
        timer.daemon = True
        timer.start()
