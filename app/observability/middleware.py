"""One ASGI middleware per app: the request id (taken from X-Request-ID when it is sane,
else made up), echoed on the response; one JSON log line when the response is done; the
HTTP and inference metrics.

Pure ASGI rather than BaseHTTPMiddleware, so streamed bodies pass through untouched and the
line is written when the last byte is sent, not when the headers are.
"""

import json
import logging
import re
import sys
import time
import uuid
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability import metrics
from app.observability.context import RequestRecord, current_record

HEADER = "x-request-id"
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

request_log = logging.getLogger("adaptd.requests")


def _json_lines_to_stderr() -> None:
    # Each line is one JSON object, whatever the root logger's format: log shippers parse it.
    if not request_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        request_log.addHandler(handler)
        request_log.setLevel(logging.INFO)
        request_log.propagate = False


def accepted_id(headers: Headers) -> str:
    """The client's id when it is short and plain (no log injection), else a new one."""
    given = headers.get(HEADER, "")
    return given if _SANE_ID.fullmatch(given) else uuid.uuid4().hex


def route_template(scope: Scope) -> str:
    """The matched route's path template, with the prefix it was included under.

    FastAPI includes a router under a prefix without copying its routes, so a console page's
    route says `/keys/{key_id}` while it serves `/console/keys/...`: the prefix is the part of
    the path before the shortest tail the route's own pattern matches."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return "unmatched"
    pattern = getattr(route, "path_regex", None)
    path = scope.get("path", "")
    if pattern is None or pattern.match(path):
        return template
    for i, char in enumerate(path):
        if char == "/" and pattern.match(path[i:]):
            return path[:i] + template
    return template


class RequestObserver:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        _json_lines_to_stderr()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = RequestRecord(request_id=accepted_id(Headers(scope=scope)))
        token = current_record.set(record)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[HEADER] = record.request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current_record.reset(token)
            self._done(scope, record, status)

    def _done(self, scope: Scope, record: RequestRecord, status: int) -> None:
        now = time.perf_counter()
        seconds = now - record.started
        route = route_template(scope)
        ttft = record.first_token - record.started if record.first_token is not None else None
        try:
            metrics.observe_request(
                scope["method"],
                route,
                status,
                seconds,
                record.variant_kind,
                record.prompt_tokens,
                record.completion_tokens,
                ttft,
            )
        except Exception:  # metrics must never fail a request
            logging.getLogger(__name__).exception("recording metrics failed")
        principal = (scope.get("state") or {}).get("principal")
        line: dict[str, Any] = {
            "ts": round(time.time(), 3),
            "request_id": record.request_id,
            "method": scope["method"],
            "route": route,
            "status": status,
            "latency_ms": round(seconds * 1000, 1),
            "tenant": getattr(principal, "tenant", None),
            "key_id": getattr(principal, "key_id", None),
        }
        if record.variant is not None:
            line.update(
                variant=record.variant,
                variant_kind=record.variant_kind,
                alias=record.alias,
                prompt_tokens=record.prompt_tokens,
                completion_tokens=record.completion_tokens,
                ttft_ms=round(ttft * 1000, 1) if ttft is not None else None,
            )
        request_log.info(json.dumps(line))
