"""One error hierarchy, mapped to OpenAI's envelope by one set of handlers.

Every error a client sees has the shape {"error": {"message", "type", "param", "code"}}.
"""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.engine.errors import EngineBusy, EngineError, InvalidInput

log = logging.getLogger(__name__)


class APIError(Exception):
    status_code = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers
        self.details = details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
        }
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


class BadRequest(APIError):
    status_code = 400
    code = "invalid_request"  # never null; raisers name a more specific one where they can


class NotFound(APIError):
    status_code = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model '{model}' does not exist or you do not have access to it.", param="model"
        )


class ContextLengthExceeded(BadRequest):
    code = "context_length_exceeded"


class Conflict(APIError):
    status_code = 409
    code = "conflict"


class AuthenticationError(APIError):
    status_code = 401
    code = "invalid_api_key"


class PermissionDenied(APIError):
    status_code = 403
    type = "permission_error"
    code = "permission_denied"


class InsufficientScope(PermissionDenied):
    code = "insufficient_scope"

    def __init__(self, scope: str) -> None:
        super().__init__(
            f"This API key lacks the '{scope}' scope that this endpoint needs.",
            details={"required_scope": scope},
        )


class PayloadTooLarge(APIError):
    status_code = 413
    code = "payload_too_large"


class RateLimited(APIError):
    status_code = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class ServiceUnavailable(APIError):
    status_code = 503
    type = "server_error"
    code = "service_unavailable"


class ServerError(APIError):
    status_code = 500
    type = "server_error"
    code = "internal_error"


def engine_api_error(exc: EngineError) -> APIError:
    """The envelope for an engine failure: the caller's input (400), busy, so retry shortly
    (503 with Retry-After), or ours (500); the engine's code, message and param carry over."""
    if isinstance(exc, InvalidInput):
        return BadRequest(exc.message, param=exc.param, code=exc.code)
    if isinstance(exc, EngineBusy):
        return ServiceUnavailable(
            exc.message,
            param=exc.param,
            code=exc.code,
            headers={"Retry-After": str(exc.retry_after_s)},
        )
    return ServerError(exc.message, param=exc.param, code=exc.code)


UNEXPECTED = "The server had an error while processing your request."


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status_code, headers=err.headers)


def _field_name(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def validation_message(errors: list[dict[str, Any]]) -> tuple[str | None, str]:
    """The field and message of the first validation error.

    A union such as `"auto" | int` reports one error per member, each with the member's
    name appended to the field's location ("n_epochs.literal['auto']", "n_epochs.
    constrained-int"). Those become one message about the field: the non-literal member's
    complaint, the literal choices as alternatives, and the value sent."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = tuple(first.get("loc", ()))
    members = [e for e in errors if tuple(e.get("loc", ()))[:-1] == loc[:-1] and e["loc"]]
    literals = [e for e in members if e.get("type") == "literal_error"]
    others = [e for e in members if e.get("type") != "literal_error"]
    if len(members) > 1 and literals and others:
        param = _field_name(loc[:-1])
        choices = " or ".join(str(e.get("ctx", {}).get("expected", "")) for e in literals)
        msg = str(others[0]["msg"]).removeprefix("Value error, ")
        return param, f"{msg}, or {choices}; got {first.get('input')!r}"
    return _field_name(loc), str(first["msg"]).removeprefix("Value error, ")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(EngineError)
    async def _engine_error(_: Request, exc: EngineError) -> JSONResponse:
        return error_response(engine_api_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        param, msg = validation_message(list(exc.errors()))
        message = f"{param}: {msg}" if param else f"Invalid request body: {msg}"
        err = BadRequest(message, param=param, code="invalid_request")
        return error_response(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI turns any failure while reading the body into a bare 400: our own size
        # cap (PayloadTooLarge raised by the receive wrapper) and a JSON decoder that gave up
        # (too deep for its recursion limit) are told apart by what caused it.
        cause = exc.__cause__
        if isinstance(cause, APIError):
            return error_response(cause)
        if exc.status_code == 400 and cause is not None:
            return error_response(
                BadRequest(
                    f"The request body could not be parsed as JSON ({type(cause).__name__}).",
                    code="invalid_json",
                )
            )
        kind = {
            400: BadRequest,
            401: AuthenticationError,
            404: NotFound,
            405: BadRequest,
            413: PayloadTooLarge,
        }.get(exc.status_code, APIError)
        err = kind(str(exc.detail))
        err.status_code = exc.status_code
        return error_response(err)

    @app.exception_handler(DBAPIError)
    async def _database_down(_: Request, exc: DBAPIError) -> JSONResponse:
        # A lost connection is the database being briefly unreachable, not a bug: 503, and
        # the pool's pre-ping reconnects once it is back.
        if exc.connection_invalidated or isinstance(exc, OperationalError):
            log.warning("database unavailable: %s", type(exc.orig).__name__)
            return error_response(
                ServiceUnavailable(
                    "The database is unavailable; retry shortly.",
                    code="database_unavailable",
                    headers={"Retry-After": "2"},
                )
            )
        return await _unexpected(_, exc)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Reached only from outside LastResort (the middleware around it); Starlette
        # re-raises after this answer, so the server then drops the connection.
        log.exception("unhandled error", exc_info=exc)
        return error_response(ServerError(UNEXPECTED))


class LastResort:
    """The one last-resort handler: any exception no handler above answered becomes the
    OpenAI envelope (500, type server_error) here, and goes no further.

    Starlette's own catch-all (`exception_handler(Exception)`) answers and then re-raises,
    and uvicorn closes a connection whose application raised: a keep-alive client's next
    request then failed with a reset too. Here nothing is re-raised unless a response was
    already half sent (a stream), where closing the connection is the only honest end."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:
            if started:
                raise
            log.exception("unhandled error", exc_info=exc)
            await error_response(ServerError(UNEXPECTED))(scope, receive, send)
