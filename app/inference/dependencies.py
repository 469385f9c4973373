from typing import Annotated

from fastapi import Depends, Request

from app.engine.engine import Engine
from app.errors import ServiceUnavailable


async def get_engine(request: Request) -> Engine:
    # async: no threadpool hop, so it never waits behind threads blocked on the database
    engine: Engine | None = getattr(request.app.state, "engine", None)
    if engine is None or not engine.running:
        raise ServiceUnavailable(
            "The model is still loading.", code="model_loading", headers={"Retry-After": "5"}
        )
    return engine


EngineDep = Annotated[Engine, Depends(get_engine)]
