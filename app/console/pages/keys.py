"""Keys (admin): create (the secret shown once), list, revoke, rotate.

The new secret is only ever in the body of the answer to the POST that made it: never in a
URL (no redirect carries it), a cookie or a log line, and the page is sent `no-store`.
"""

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.auth import service as keys
from app.auth.models import ApiKey
from app.auth.schemas import ApiKeyCreate, ApiKeyRead, ApiKeyRotate, from_unix
from app.auth.service import SCOPES
from app.console.session import ConsoleSession
from app.console.web import ConsoleDep, ConsoleRoute, FormConsoleDep, redirect, render
from app.db import SessionDep, utcnow
from app.errors import APIError

router = APIRouter(route_class=ConsoleRoute)
PAGE_SIZE = 50
MAX_EXPIRY_DAYS = 3650
DAY_S = 24 * 3600


def _page(
    request: Request,
    console: ConsoleSession,
    session: Session,
    *,
    after: str | None = None,
    form: dict | None = None,
    errors: dict[str, str] | None = None,
    secret: tuple[ApiKey, str, str] | None = None,  # (row, secret, "created" | "rotated")
    status_code: int = 200,
) -> Response:
    rows, has_more = keys.list_keys(
        session, console.principal, include_revoked=True, after=after, limit=PAGE_SIZE
    )
    new = None
    if secret is not None:
        row, value, action = secret
        new = {"key": ApiKeyRead.of(row), "secret": value, "action": action}
    return render(
        request,
        "keys.html",
        {
            "keys": [ApiKeyRead.of(r) for r in rows],
            "bootstrap": {r.id for r in rows if r.bootstrap},
            "next_after": rows[-1].id if has_more and rows else None,
            "all_scopes": SCOPES,
            "form": form or {"name": "", "scopes": ["inference"], "days": "", "tenant": ""},
            "errors": errors or {},
            "new": new,
        },
        console=console,
        status_code=status_code,
    )


@router.get("/keys", response_class=HTMLResponse)
def keys_page(
    request: Request,
    console: ConsoleDep,
    session: SessionDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    return _page(request, console, session, after=after)


def _expires_at(days: str) -> int | None:
    """'Expires in N days' -> unix time; empty means never."""
    if not days.strip():
        return None
    try:
        n = int(days)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_EXPIRY_DAYS:
        raise _FieldError("days", f"Give a whole number of days from 1 to {MAX_EXPIRY_DAYS}.")
    return int(utcnow().timestamp()) + n * DAY_S


class _FieldError(Exception):
    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message


FORM_FIELDS = {"name": "name", "scopes": "scopes", "tenant": "tenant", "expires_at": "days"}


def _field(param: object) -> str:
    """The form field an API parameter is shown at (the form's top for the others)."""
    return FORM_FIELDS.get(str(param), "form")


def _validation_errors(exc: ValidationError) -> dict[str, str]:
    errors: dict[str, str] = {}
    for e in exc.errors():
        field = _field(e["loc"][0]) if e["loc"] else "form"
        errors.setdefault(field, e["msg"].removeprefix("Value error, "))
    return errors


@router.post("/keys")
async def create_key(
    request: Request,
    console: FormConsoleDep,
    session: SessionDep,
    name: Annotated[str, Form()] = "",
    days: Annotated[str, Form()] = "",
    tenant: Annotated[str, Form()] = "",
) -> Response:
    form_data = await request.form()  # already parsed by the CSRF check
    scopes = [v for v in form_data.getlist("scopes") if isinstance(v, str)]
    form = {"name": name, "scopes": scopes, "days": days, "tenant": tenant}
    try:
        body = ApiKeyCreate(
            name=name.strip(),
            scopes=scopes,  # type: ignore[arg-type] - pydantic checks each against Scope
            tenant=(tenant.strip() or None) if console.principal.platform else None,
            expires_at=_expires_at(days),
        )
        row, secret = keys.create_key_as(
            session,
            console.principal,
            body.tenant,
            body.name,
            body.requested_scopes(),
            expires_at=from_unix(body.expires_at),
        )
    except _FieldError as exc:
        errors = {exc.field: exc.message}
    except ValidationError as exc:
        errors = _validation_errors(exc)
    except APIError as exc:
        errors = {_field(exc.param): exc.message}
    else:
        return _page(request, console, session, secret=(row, secret, "created"))
    return _page(request, console, session, form=form, errors=errors, status_code=400)


@router.post("/keys/{key_id}/revoke")
def revoke_key(key_id: str, console: FormConsoleDep, session: SessionDep) -> Response:
    keys.revoke_key(session, console.principal, key_id)
    return redirect("/keys")


@router.post("/keys/{key_id}/rotate")
def rotate_key(
    key_id: str,
    request: Request,
    console: FormConsoleDep,
    session: SessionDep,
    grace_period_s: Annotated[str, Form()] = "",
) -> Response:
    try:
        body = ApiKeyRotate(grace_period_s=grace_period_s.strip() or 0)  # type: ignore[arg-type]
    except ValidationError as exc:
        errors = {f"grace-{key_id}": "; ".join(_validation_errors(exc).values())}
        return _page(request, console, session, errors=errors, status_code=400)
    row, secret = keys.rotate_key(session, console.principal, key_id, body.grace_period_s)
    return _page(request, console, session, secret=(row, secret, "rotated"))
