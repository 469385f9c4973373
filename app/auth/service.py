"""API keys: generation, hashing, lookup and the bootstrap admin key."""

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import ApiKey
from app.ids import new_id

ADMIN_TENANT = "default"


@dataclass(frozen=True)
class Principal:
    """Who is calling: every row a client creates belongs to `tenant`."""

    tenant: str
    key_id: str
    is_admin: bool


def hash_key(key: str) -> str:
    # Keys are 32 random bytes, so a fast hash is enough (no dictionary to guard against).
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    return "sk-adaptd-" + secrets.token_urlsafe(32)


def lookup(session: Session, key: str) -> Principal | None:
    row = session.scalar(
        select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    )
    if row is None:
        return None
    return Principal(tenant=row.tenant, key_id=row.id, is_admin=row.is_admin)


def create_key(
    session: Session, tenant: str, name: str = "", is_admin: bool = False
) -> tuple[ApiKey, str]:
    key = generate_key()
    row = ApiKey(
        id=new_id("key_"),
        tenant=tenant,
        name=name,
        key_hash=hash_key(key),
        prefix=key[:14],
        is_admin=is_admin,
    )
    session.add(row)
    session.commit()
    return row, key


def ensure_admin_key(session: Session, key: str) -> None:
    """Register the bootstrap admin key (idempotent), as the `default` tenant."""
    digest = hash_key(key)
    if session.scalar(select(ApiKey).where(ApiKey.key_hash == digest)) is not None:
        return
    session.add(
        ApiKey(
            id=new_id("key_"),
            tenant=ADMIN_TENANT,
            name="bootstrap admin",
            key_hash=digest,
            prefix=key[:14],
            is_admin=True,
        )
    )
    session.commit()
