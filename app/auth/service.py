"""API keys: generation, hashing, authentication, scopes, the key lifecycle (list, revoke,
rotate, expiry) and the bootstrap admin key.

Who may manage which keys: a key with the `admin` scope manages the non-platform keys of its
own tenant; only a *platform* admin (the bootstrap key, or a platform key it created) sees,
rotates or revokes platform keys, reaches other tenants or creates platform keys. Keys
outside an actor's reach answer as not found, and each such refusal is audited
(`key.denied`), committed even though the request fails.
"""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, get_args

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from app.audit.models import AuditEvent
from app.auth.models import ApiKey
from app.db import utcnow
from app.errors import AuthenticationError, BadRequest, Conflict, NotFound, PermissionDenied
from app.ids import new_id
from app.observability.context import request_id

ADMIN_TENANT = "default"
BOOTSTRAP_NAME = "bootstrap admin"

Scope = Literal["inference", "manage", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
DEFAULT_SCOPES: tuple[Scope, ...] = ("inference", "manage")

# last_used_at is a hint for operators; one write a minute per key keeps auth read-only.
LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True)
class Principal:
    """Who is calling: every row a client creates belongs to `tenant`."""

    tenant: str
    key_id: str
    scopes: frozenset[str] = frozenset(SCOPES)
    platform: bool = False
    # The hash of the secret presented (a rotated key has two good ones for a while).
    secret_hash: str | None = None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes


def hash_key(key: str) -> str:
    # Keys are 32 random bytes, so a fast hash is enough (no dictionary to guard against).
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    return "sk-adaptd-" + secrets.token_urlsafe(32)


def key_prefix(key: str) -> str:
    return key[:14]


def key_status(row: ApiKey, now: datetime | None = None) -> str:
    now = now or utcnow()
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return "active"


def authenticate(session: Session, key: str) -> Principal:
    """The principal for a presented key, or AuthenticationError. Read from the database on
    every request (one indexed lookup), so a revocation holds at once in every process."""
    digest = hash_key(key)
    row = session.scalar(
        select(ApiKey).where(or_(ApiKey.key_hash == digest, ApiKey.previous_key_hash == digest))
    )
    now = utcnow()
    _check_secret(row, digest, now)
    assert row is not None
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        _touch(session, row.id, now)
    return principal_of(row, digest)


def principal_of(row: ApiKey, secret_hash: str) -> Principal:
    return Principal(
        tenant=row.tenant,
        key_id=row.id,
        scopes=frozenset(row.scopes),
        platform=row.platform,
        secret_hash=secret_hash,
    )


def _check_secret(row: ApiKey | None, digest: str, now: datetime) -> None:
    """Raise AuthenticationError unless the secret hashing to `digest` is good now for `row`
    (its current secret, or its previous one within the grace period of a rotation)."""
    if row is None or row.revoked_at is not None:
        raise AuthenticationError("Incorrect API key provided.")
    if row.key_hash != digest and (
        row.previous_key_hash != digest
        or row.previous_valid_until is None
        or row.previous_valid_until <= now
    ):
        raise AuthenticationError("Incorrect API key provided: this key was rotated.")
    if row.expires_at is not None and row.expires_at <= now:
        raise AuthenticationError("This API key has expired.", code="expired_api_key")


def recheck(session: Session, principal: Principal) -> None:
    """Raise AuthenticationError if the secret `principal` was authenticated with is no
    longer good (revoked, expired, rotated out): for work that outlives its request's check,
    such as a long stream."""
    row = session.get(ApiKey, principal.key_id)
    _check_secret(row, principal.secret_hash or "", utcnow())


def _touch(session: Session, key_id: str, now: datetime) -> None:
    # Conditional, so concurrent processes that all saw a stale value write it once.
    session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - LAST_USED_RESOLUTION),
        )
        .values(last_used_at=now)
    )
    session.commit()


def lookup(session: Session, key: str) -> Principal | None:
    try:
        return authenticate(session, key)
    except AuthenticationError:
        return None


def _check_scopes(scopes: list[str] | tuple[str, ...]) -> list[str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise BadRequest(
            f"Unknown scopes {unknown}; choose from {list(SCOPES)}.",
            param="scopes",
            code="invalid_scope",
        )
    return [s for s in SCOPES if s in scopes]  # canonical order, no repeats


def create_key(
    session: Session,
    tenant: str,
    name: str = "",
    scopes: list[str] | tuple[str, ...] = DEFAULT_SCOPES,
    *,
    platform: bool = False,
    expires_at: datetime | None = None,
    created_by: str | None = None,
) -> tuple[ApiKey, str]:
    """A new key for `tenant`; returns the row and the secret (shown once, never stored)."""
    key = generate_key()
    row = ApiKey(
        id=new_id("key_"),
        tenant=tenant,
        name=name,
        key_hash=hash_key(key),
        prefix=key_prefix(key),
        scopes=_check_scopes(scopes),
        platform=platform,
        expires_at=expires_at,
        created_by=created_by,
    )
    session.add(row)
    session.commit()
    return row, key


def create_key_as(
    session: Session,
    actor: Principal,
    tenant: str | None,
    name: str = "",
    scopes: list[str] | tuple[str, ...] = DEFAULT_SCOPES,
    *,
    platform: bool = False,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """create_key on behalf of an admin key, within what that key may reach."""
    tenant = tenant or actor.tenant
    if not actor.platform and tenant != actor.tenant:
        _audit_denial(session, actor, tenant, "-", "create")
        raise PermissionDenied(
            "A tenant admin key can create keys for its own tenant only.", param="tenant"
        )
    if platform and not actor.platform:
        _audit_denial(session, actor, tenant, "-", "create_platform")
        raise PermissionDenied(
            "Only a platform admin key can create platform keys.", param="platform"
        )
    if platform and "admin" not in scopes:
        raise BadRequest("A platform key needs the 'admin' scope.", param="scopes")
    if expires_at is not None and expires_at <= utcnow():
        raise BadRequest("expires_at must be in the future.", param="expires_at")
    return create_key(
        session,
        tenant,
        name,
        scopes,
        platform=platform,
        expires_at=expires_at,
        created_by=actor.key_id,
    )


def _visible(actor: Principal):
    """The keys an actor may see: all for a platform admin; else its tenant's, less the
    platform keys (whose secret would reach every tenant)."""
    if actor.platform:
        return None
    return (ApiKey.tenant == actor.tenant) & ApiKey.platform.is_(False)


def _may_see(actor: Principal, row: ApiKey) -> bool:
    """_visible for one loaded row."""
    return actor.platform or (row.tenant == actor.tenant and not row.platform)


def _audit_denial(
    session: Session, actor: Principal, tenant: str, key_id: str, attempted: str
) -> None:
    """Record a refused key operation. Its own commit: the request fails, the row stays."""
    session.rollback()
    session.add(
        AuditEvent(
            tenant=tenant,
            actor_key_id=actor.key_id,
            action="key.denied",
            object_type="api_key",
            object_id=key_id,
            request_id=request_id(),
            details={"attempted": attempted, "actor_tenant": actor.tenant},
        )
    )
    session.commit()


def list_keys(
    session: Session,
    actor: Principal,
    *,
    tenant: str | None = None,
    include_revoked: bool = False,
    after: str | None = None,
    limit: int = 20,
) -> tuple[list[ApiKey], bool]:
    """Keys the actor may see, oldest first, `limit` at a time after the id `after`."""
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    scope = _visible(actor)
    if scope is not None:
        query = query.where(scope)
    if tenant is not None:
        query = query.where(ApiKey.tenant == tenant)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    if after is not None:
        anchor = get_key(session, actor, after, attempted="list")
        query = query.where(
            or_(
                ApiKey.created_at > anchor.created_at,
                (ApiKey.created_at == anchor.created_at) & (ApiKey.id > anchor.id),
            )
        )
    rows = list(session.scalars(query.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def get_key(session: Session, actor: Principal, key_id: str, *, attempted: str = "read") -> ApiKey:
    """The key `key_id` if the actor may see it; else NotFound (and, for a key that exists
    outside its reach, an audited denial of `attempted`)."""
    row = session.get(ApiKey, key_id)
    if row is not None and not _may_see(actor, row):
        _audit_denial(session, actor, row.tenant, row.id, attempted)
        row = None
    if row is None:
        raise NotFound(f"No API key with id '{key_id}'.", param="key_id")
    return row


def _refuse_bootstrap(row: ApiKey, action: str) -> None:
    if row.bootstrap:
        raise Conflict(
            f"The bootstrap admin key cannot be {action} here: change ADAPTD_ADMIN_KEY and "
            "restart; the old bootstrap key stops working then.",
            code="bootstrap_key",
        )


def revoke_key(session: Session, actor: Principal, key_id: str) -> ApiKey:
    """Revoke a key: every process refuses it from its next request. Idempotent."""
    row = get_key(session, actor, key_id, attempted="revoke")
    _refuse_bootstrap(row, "revoked")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.commit()
    return row


def rotate_key(
    session: Session, actor: Principal, key_id: str, grace_period_s: int = 0
) -> tuple[ApiKey, str]:
    """A new secret for the same key (id, tenant, scopes kept); the old secret keeps working
    for `grace_period_s` seconds (none by default). A second rotation ends the first's grace."""
    row = get_key(session, actor, key_id, attempted="rotate")
    _refuse_bootstrap(row, "rotated")
    if row.revoked_at is not None:
        raise Conflict(f"API key '{key_id}' is revoked; create a new one.", code="key_revoked")
    key = generate_key()
    if grace_period_s > 0:
        row.previous_key_hash = row.key_hash
        row.previous_valid_until = utcnow() + timedelta(seconds=grace_period_s)
    else:
        row.previous_key_hash = None
        row.previous_valid_until = None
    row.key_hash = hash_key(key)
    row.prefix = key_prefix(key)
    session.commit()
    return row, key


def ensure_admin_key(session: Session, key: str) -> None:
    """Register the bootstrap admin key (idempotent), as a platform key of the `default`
    tenant with every scope. A bootstrap key from an earlier ADAPTD_ADMIN_KEY is revoked."""
    digest = hash_key(key)
    now = utcnow()
    session.execute(
        update(ApiKey)
        .where(ApiKey.bootstrap.is_(True), ApiKey.key_hash != digest, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    if session.scalar(select(ApiKey).where(ApiKey.key_hash == digest)) is None:
        session.add(
            ApiKey(
                id=new_id("key_"),
                tenant=ADMIN_TENANT,
                name=BOOTSTRAP_NAME,
                key_hash=digest,
                prefix=key_prefix(key),
                scopes=list(SCOPES),
                platform=True,
                bootstrap=True,
            )
        )
    session.commit()
