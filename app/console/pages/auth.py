"""Sign in with an API key, sign out."""

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from app.auth import service as auth_service
from app.auth.models import ApiKey
from app.console import session as console_session
from app.console.web import ConsoleRoute, FormConsoleDep, landing_page, redirect, render
from app.db import SessionDep

router = APIRouter(route_class=ConsoleRoute)


def _login_page(request: Request, error: str | None = None, status_code: int = 200) -> Response:
    nonce = console_session.login_nonce(request)
    response = render(
        request,
        "login.html",
        {"login_token": console_session.login_token(nonce), "error": error},
        status_code=status_code,
    )
    console_session.set_login_cookie(request, response, nonce)
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    return _login_page(request)


@router.post("/login")
def login(
    request: Request,
    session: SessionDep,
    api_key: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    console_session.check_login_csrf(request, csrf_token)
    secret = api_key.strip()
    principal = auth_service.lookup(session, secret) if secret else None
    if principal is None:
        return _login_page(request, "That key is not valid (or was revoked).", 401)
    key = session.get(ApiKey, principal.key_id)
    assert key is not None
    if key.key_hash != principal.secret_hash:
        # A secret in its rotation grace period serves running clients; a new session would
        # be bound to the new secret, outliving the old one's grace.
        return _login_page(request, "That secret was rotated out: sign in with the new one.", 401)
    response = redirect(landing_page(principal.scopes))
    console_session.start_session(request, response, key, session)
    return response


@router.post("/logout")
def logout(console: FormConsoleDep, session: SessionDep) -> Response:
    response = redirect("/login")
    console_session.end_session(response, console, session)
    return response
