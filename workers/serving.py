"""The worker's own inference engine, loaded on first use and kept for the process: an
evaluation runs through the same engine (and batching) that serves API requests, the one
ENGINE names (with ENGINE=vllm, the same vLLM servers)."""

import threading

from app.engine.factory import build_engine
from app.engine.protocol import InferenceEngine
from app.settings import get_settings

_engine: InferenceEngine | None = None
_lock = threading.Lock()


def worker_engine() -> InferenceEngine:
    global _engine
    with _lock:
        if _engine is None:
            _engine = build_engine(get_settings())
        return _engine
