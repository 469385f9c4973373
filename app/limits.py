"""Request-body size cap, enforced before the body is read into memory."""

from collections.abc import Callable, Collection, Mapping

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge, error_response

# Where MAX_UPLOAD_BYTES applies instead of MAX_BODY_BYTES: the API's file upload and the
# console's form for it (one setting, so both take the same files).
UPLOAD_PATHS = ("/v1/files", "/console/files")

# The refusal (413) for paths under a prefix whose clients are browsers; given the limit.
ErrorPage = Callable[[int], Response]


def _under(path: str, prefixes: Collection[str]) -> str | None:
    return next((p for p in prefixes if path == p or path.startswith(p + "/")), None)


class BodySizeLimit:
    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        max_upload_bytes: int,
        error_pages: Mapping[str, ErrorPage] | None = None,
    ) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_upload = max_upload_bytes
        self.error_pages = dict(error_pages or {})  # path prefix -> its refusal page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        limit = self.max_upload if _under(path, UPLOAD_PATHS) else self.max_body
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refusal(path, limit)(scope, receive, send)
            return
        seen = 0

        async def capped_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _too_large(limit)
            return message

        await self.app(scope, capped_receive, send)

    def _refusal(self, path: str, limit: int) -> Response:
        prefix = _under(path, self.error_pages)
        return self.error_pages[prefix](limit) if prefix else error_response(_too_large(limit))


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body is larger than this server's limit of {limit} bytes.")
