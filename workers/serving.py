"""The worker's own inference engine, loaded on first use and kept for the process: an
evaluation runs through the same engine (and batching) that serves API requests."""

import threading

from app.engine.engine import Engine, EngineConfig
from app.engine.loader import load_base_model
from app.settings import get_settings

_engine: Engine | None = None
_lock = threading.Lock()


def worker_engine() -> Engine:
    global _engine
    with _lock:
        if _engine is None:
            settings = get_settings()
            loaded = load_base_model(settings.base_model, settings.model_cache, settings.device)
            _engine = Engine(loaded, EngineConfig.from_settings(settings))
            _engine.start()
        return _engine
