"""/v1/models types."""

from typing import Literal

from pydantic import BaseModel


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    # adaptd extension: base | template | adapter | alias
    kind: str = "base"
    # adaptd extension, adapters only: the adapter it was trained on top of
    parent: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
