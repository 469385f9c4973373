"""The console's HTTP plumbing: templates, security headers, the signed-in dependency, CSRF,
and one route class that turns service errors into pages."""

import json
from collections.abc import Callable, Collection, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import Depends, Request, Response, params
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute

from app.auth.rate_limit import RateLimiter
from app.auth.service import Scope
from app.console.session import (
    CSRF_FIELD,
    CSRF_HEADER,
    ConsoleSession,
    CsrfRejected,
    SignInRequired,
    check_csrf,
    read_session,
)
from app.db import SessionDep
from app.errors import APIError, InsufficientScope
from app.observability.context import note_actor

HERE = Path(__file__).parent
PREFIX = "/console"

# Scripts and styles only from adaptd itself (no inline ones), images from itself, nothing
# may frame the console, and forms post only back to it.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # "no-referrer" would make browsers send `Origin: null` on our own form posts.
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def _when(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value else f"{value:.{digits}f}"
    return str(value)


def _metrics(values: dict[str, Any]) -> str:
    """`name value, ...`, leaving out what was not measured."""
    return ", ".join(
        f"{k} {v if isinstance(v, int) else _number(v)}" for k, v in values.items() if v is not None
    )


def _as_json(value: Any) -> str:
    return json.dumps(value, indent=1, ensure_ascii=False, sort_keys=True)


templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every value is escaped, whatever the file's name
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters.update(when=_when, number=_number, as_json=_as_json, metrics=_metrics)


def render(
    request: Request | None,
    name: str,
    context: dict[str, Any],
    *,
    console: ConsoleSession | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    html = templates.get_template(name).render(
        request=request,
        console=console,
        prefix=PREFIX,
        csrf_field=CSRF_FIELD,
        **context,
    )
    return HTMLResponse(html, status_code=status_code)


def redirect(path: str) -> RedirectResponse:
    return RedirectResponse(PREFIX + path, status_code=303)


def too_large_page(limit: int) -> HTMLResponse:
    """The 413 for a console form over the size limit (a file upload: MAX_UPLOAD_BYTES),
    answered by the size-limit middleware before the body is read, so before any route or
    session: a page without the menu."""
    size = f"{limit / 2**20:g} MiB" if limit >= 2**20 else f"{limit} bytes"
    response = render(
        None,  # the templates never read the request
        "error.html",
        {
            "status": 413,
            "message": f"This is larger than this server takes: the limit is {size}.",
            "back": ("/files", "Back to Files"),
        },
        status_code=413,
    )
    response.headers.update(SECURITY_HEADERS)
    return response


def _wants_html(request: Request) -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("accept", "")


class ConsoleRoute(APIRoute):
    """Service errors become the console's error page (or JSON for scripts); no session
    sends a browser to the sign-in form; every answer gets the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired:
                if _wants_html(request):
                    response = redirect("/login")
                else:
                    response = JSONResponse({"error": {"message": "Sign in again."}}, 401)
            except CsrfRejected:
                response = render(
                    request,
                    "error.html",
                    {"status": 403, "message": "This form expired or came from another site."},
                    status_code=403,
                )
            except APIError as exc:
                if request.headers.get(CSRF_HEADER):  # a script's request: the envelope
                    response = JSONResponse(exc.body(), exc.status_code)
                else:
                    response = render(
                        request,
                        "error.html",
                        {"status": exc.status_code, "message": exc.message},
                        console=getattr(request.state, "console", None),  # keeps the menu
                        status_code=exc.status_code,
                    )
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return console_handler


def signed_in(request: Request, session: SessionDep) -> ConsoleSession:
    console = read_session(request, session)
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        limiter.check(console.principal.key_id)
    request.state.principal = console.principal
    request.state.console = console
    note_actor(console.principal.key_id)  # the audit trail names the key behind the console
    return console


ConsoleDep = Annotated[ConsoleSession, Depends(signed_in)]

_scope_checks: dict[str, params.Depends] = {}


def console_requires(scope: Scope) -> params.Depends:
    """The console's version of the API's scope check (app/auth/dependencies.py), for a page
    module's routes: a key without `scope` gets the 403 page (or the JSON envelope)."""
    if scope not in _scope_checks:

        def check(console: ConsoleDep) -> ConsoleSession:
            if scope not in console.principal.scopes:
                raise InsufficientScope(scope)
            return console

        _scope_checks[scope] = Depends(check)
    return _scope_checks[scope]


def landing_page(scopes: Collection[str]) -> str:
    """Where a key lands after signing in: the first part of the console it may use."""
    if "manage" in scopes:
        return "/"
    if "inference" in scopes:
        return "/playground"
    return "/keys"


async def csrf_checked(request: Request, console: ConsoleDep) -> ConsoleSession:
    """For every state-changing request: the session's token, from the form or a header."""
    submitted = request.headers.get(CSRF_HEADER)
    if submitted is None:
        form = await request.form()  # parsed once; the handler's Form fields reuse it
        value = form.get(CSRF_FIELD)
        submitted = value if isinstance(value, str) else None
    check_csrf(request, console.csrf_token, submitted)
    return console


FormConsoleDep = Annotated[ConsoleSession, Depends(csrf_checked)]
