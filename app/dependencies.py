"""What the API's routes and console pages take from the app: the engine, and the base
model's name. One module for every router, so none of them imports another package for it."""

from typing import Annotated

from fastapi import Depends, Request

from app.engine.loader import model_name
from app.engine.protocol import InferenceEngine
from app.errors import ServiceUnavailable
from app.settings import get_settings


async def get_engine(request: Request) -> InferenceEngine:
    # async: no threadpool hop, so it never waits behind threads blocked on the database
    engine: InferenceEngine | None = getattr(request.app.state, "engine", None)
    if engine is None or not engine.running:
        raise ServiceUnavailable(
            "The model is still loading.", code="model_loading", headers={"Retry-After": "5"}
        )
    return engine


def base_model_name() -> str:
    """The base model's public name (what /v1/models lists, what `ft:` names and aliases
    resolve against), from BASE_MODEL by the rule the engines name themselves with
    (`loader.model_name`): known while the engine still loads, so routes that need only the
    name never wait for the model."""
    return model_name(get_settings().base_model)


EngineDep = Annotated[InferenceEngine, Depends(get_engine)]
BaseModelNameDep = Annotated[str, Depends(base_model_name)]
