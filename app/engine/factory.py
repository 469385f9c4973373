"""Builds the configured engine (ENGINE=local|vllm), for the API and the workers alike."""

import logging

from app.engine.protocol import InferenceEngine
from app.settings import Settings

log = logging.getLogger(__name__)


def build_engine(settings: Settings) -> InferenceEngine:
    """Loads what the engine needs and starts it."""
    engine: InferenceEngine
    # Imported here: a process loads only the engine it is configured for.
    if settings.engine == "vllm":
        from app.engine.vllm.engine import VllmEngine

        engine = VllmEngine.from_settings(settings)
    else:
        from app.engine.engine import Engine, EngineConfig
        from app.engine.loader import dtype_name, load_base_model

        loaded = load_base_model(
            settings.base_model, settings.model_cache, settings.device, settings.dtype
        )
        log.info(
            "model %s loaded on %s in %s (DTYPE=%s)",
            loaded.name,
            loaded.device,
            dtype_name(loaded.dtype),
            settings.dtype,
        )
        engine = Engine(loaded, EngineConfig.from_settings(settings))
    engine.start()
    return engine
