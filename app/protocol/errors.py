"""The OpenAI error envelope, as documented in the OpenAPI schema."""

from typing import Any

from pydantic import BaseModel


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Invalid request",
        401: "Missing or wrong API key",
        403: "Not allowed for this key",
        404: "Not found (or another tenant's)",
        409: "Conflict with the current state",
        413: "Request body too large",
        429: "Rate limit or quota reached",
        503: "Overloaded, loading or database unavailable; see Retry-After",
    }.items()
}
