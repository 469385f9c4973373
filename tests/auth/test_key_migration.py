"""Migration 0004_keys on a database holding keys made under 0001: admin keys of the `default`
tenant become platform keys, other admin keys become tenant admins, plain keys keep
inference and manage, and the bootstrap key is recognised."""

import secrets

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from app.auth.service import authenticate, hash_key
from app.db import make_engine
from tests.conftest import PG_ADMIN_URL, ROOT


def alembic(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url)
    cfg.attributes["configure_logger"] = False
    return cfg


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    name = f"adaptd_mig_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_0004_converts_is_admin_into_scopes(empty_url: str) -> None:
    cfg = alembic(empty_url)
    command.upgrade(cfg, "0001")
    engine = make_engine(empty_url)
    rows = [
        ("key_boot", "default", "bootstrap admin", "sk-boot", True),
        ("key_plat", "default", "ops", "sk-plat", True),
        ("key_tadm", "acme", "acme admin", "sk-tadm", True),
        ("key_app", "acme", "app", "sk-app", False),
    ]
    with engine.begin() as conn:
        for key_id, tenant, name, secret, is_admin in rows:
            conn.execute(
                text(
                    "INSERT INTO api_keys (id, tenant, name, key_hash, prefix, is_admin,"
                    " created_at) VALUES (:i, :t, :n, :h, :p, :a, CURRENT_TIMESTAMP)"
                ),
                {
                    "i": key_id,
                    "t": tenant,
                    "n": name,
                    "h": hash_key(secret),
                    "p": secret,
                    "a": is_admin,
                },
            )
    command.upgrade(cfg, "head")
    from sqlalchemy.orm import Session

    with Session(engine) as s:
        got = {key_id: authenticate(s, secret) for key_id, _, _, secret, _ in rows}
        boot = s.execute(text("SELECT bootstrap FROM api_keys WHERE id = 'key_boot'")).scalar()
    assert got["key_boot"].platform and got["key_boot"].scopes == {"inference", "manage", "admin"}
    assert boot
    assert got["key_plat"].platform and got["key_plat"].is_admin
    assert not got["key_tadm"].platform and got["key_tadm"].is_admin
    assert got["key_app"].scopes == {"inference", "manage"} and not got["key_app"].platform
    command.downgrade(cfg, "0001")
    with engine.connect() as conn:
        admins = dict(conn.execute(text("SELECT id, is_admin FROM api_keys")).all())
    assert admins == {"key_boot": True, "key_plat": True, "key_tadm": False, "key_app": False}
    engine.dispose()
