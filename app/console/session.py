"""Console sign-in: a signed session cookie bound to an API key's hash, and CSRF tokens.

The cookie holds `<key id>.<expiry>.<nonce>.<signature>`; the signature is an HMAC over those
and the key's stored hash, so the key itself is never stored in the browser, and revoking
or rotating the key ends every session made with it. Each session also has a row
(`console_sessions`, keyed by its nonce) that signing out deletes, so a copy of the cookie
dies with the session. The CSRF token is an HMAC of the session's nonce
(a double-submit token the server can check without storing anything); the sign-in form
gets one tied to a short-lived pre-session cookie instead.
"""

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from fastapi import Request, Response
from sqlalchemy import delete
from sqlalchemy.orm import Session

from app.auth.models import ApiKey
from app.auth.service import Principal, key_status, principal_of
from app.console.models import ConsoleSignIn
from app.db import get_sessionmaker, utcnow
from app.settings import get_settings

SESSION_COOKIE = "adaptd_console"
LOGIN_COOKIE = "adaptd_console_login"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SESSION_TTL_S = 8 * 3600
LOGIN_TTL_S = 3600
SECRET_ENV = "ADAPTD_CONSOLE_SECRET"


class SignInRequired(Exception):
    """No valid session: pages redirect to the sign-in form, scripts get a 401."""


class CsrfRejected(Exception):
    """A state-changing request without this session's token or from another origin."""


@dataclass(frozen=True)
class ConsoleSession:
    principal: Principal
    key_name: str
    key_prefix: str
    csrf_token: str
    nonce: str


def _read_or_create_secret(path: Path) -> bytes:
    """One secret per data folder, so every API process behind it accepts the same cookies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    value = secrets.token_bytes(32)
    with os.fdopen(fd, "w") as f:
        f.write(value.hex())
    return value


@lru_cache
def _secret_for(configured: str | None, path: str) -> bytes:
    if configured:
        return hashlib.sha256(configured.encode()).digest()
    return _read_or_create_secret(Path(path))


def signing_secret() -> bytes:
    return _secret_for(os.environ.get(SECRET_ENV), str(get_settings().data_dir / "console_secret"))


def _mac(*parts: str) -> str:
    digest = hmac.new(signing_secret(), "|".join(parts).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _set_cookie(request: Request, response: Response, name: str, value: str, ttl: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=ttl,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


# -- the session ---------------------------------------------------------------------------
def start_session(request: Request, response: Response, key: ApiKey, db: Session) -> None:
    expires = int(time.time()) + SESSION_TTL_S
    expiry = str(expires)
    nonce = secrets.token_urlsafe(16)
    now = utcnow()
    db.execute(delete(ConsoleSignIn).where(ConsoleSignIn.expires_at <= now))  # old ones
    db.add(
        ConsoleSignIn(nonce=nonce, key_id=key.id, expires_at=now + timedelta(seconds=SESSION_TTL_S))
    )
    db.commit()
    signature = _mac("session", key.id, expiry, nonce, key.key_hash)
    value = ".".join((key.id, expiry, nonce, signature))
    _set_cookie(request, response, SESSION_COOKIE, value, SESSION_TTL_S)
    response.delete_cookie(LOGIN_COOKIE, path="/console")


def end_session(response: Response, console: ConsoleSession, db: Session) -> None:
    db.execute(delete(ConsoleSignIn).where(ConsoleSignIn.nonce == console.nonce))
    db.commit()
    response.delete_cookie(SESSION_COOKIE, path="/console")


def read_session(request: Request, session: Session) -> ConsoleSession:
    value = request.cookies.get(SESSION_COOKIE, "")
    parts = value.split(".")
    if len(parts) != 4:
        raise SignInRequired
    key_id, expiry, nonce, signature = parts
    if not expiry.isdigit() or int(expiry) < time.time():
        raise SignInRequired
    key = session.get(ApiKey, key_id)
    if key is None or key_status(key) != "active":  # revoked or expired since sign-in
        raise SignInRequired
    if not hmac.compare_digest(signature, _mac("session", key.id, expiry, nonce, key.key_hash)):
        raise SignInRequired
    live = session.get(ConsoleSignIn, nonce)
    if live is None or live.key_id != key.id:  # signed out
        raise SignInRequired
    return ConsoleSession(
        principal=principal_of(key, key.key_hash),
        key_name=key.name,
        key_prefix=key.prefix,
        csrf_token=_mac("csrf", nonce),
        nonce=nonce,
    )


def still_signed_in(request: Request) -> bool:
    """For long-lived streams: is the session (and its key) still good?"""
    with get_sessionmaker()() as session:
        try:
            read_session(request, session)
        except SignInRequired:
            return False
    return True


# -- CSRF ----------------------------------------------------------------------------------
def _same_origin(request: Request) -> bool:
    """Browsers send Origin on every cross-site POST; when present it must be ours."""
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser's cross-site request; the token still has to match
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def check_csrf(request: Request, expected: str, submitted: str | None) -> None:
    if not _same_origin(request):
        raise CsrfRejected

    if not submitted or not hmac.compare_digest(submitted, expected):
        raise CsrfRejected


def submitted_token(request: Request, form_value: str | None = None) -> str | None:
    return form_value or request.headers.get(CSRF_HEADER)


def login_nonce(request: Request) -> str:
    """The pre-session value the sign-in form's token is tied to (reused while it lives)."""
    return request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(16)


def login_token(nonce: str) -> str:
    return _mac("login", nonce)


def set_login_cookie(request: Request, response: Response, nonce: str) -> None:
    _set_cookie(request, response, LOGIN_COOKIE, nonce, LOGIN_TTL_S)


def check_login_csrf(request: Request, submitted: str | None) -> None:
    nonce = request.cookies.get(LOGIN_COOKIE)
    if not nonce:
        raise CsrfRejected
    check_csrf(request, login_token(nonce), submitted)
