from typing import Annotated

from fastapi import Depends, Request

from app.engine.protocol import InferenceEngine
from app.errors import ServiceUnavailable


async def get_engine(request: Request) -> InferenceEngine:
    # async: no threadpool hop, so it never waits behind threads blocked on the database
    engine: InferenceEngine | None = getattr(request.app.state, "engine", None)
    if engine is None or not engine.running:
        raise ServiceUnavailable(
            "The model is still loading.", code="model_loading", headers={"Retry-After": "5"}
        )
    return engine


EngineDep = Annotated[InferenceEngine, Depends(get_engine)]
