"""Shared fixtures: a tiny model, real databases (SQLite and PostgreSQL), the app; and the
test tiers.

PostgreSQL and Redis are the machine's real servers; each test session works in a database
and a Celery queue of its own, so parallel runs do not collide.

Tests run on SQLite unless marked `both_databases` (then once on each), chosen where the
database's own behaviour matters: migrations, compare-and-set updates, claims and reapers,
tenant isolation, pagination order, references. Tiers are markers (see pyproject.toml), set
here from where a test lives or what it starts, so that `make test-fast` can leave out worker
processes, fault injection, PostgreSQL and the real model; `make test` runs everything.
"""

import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.tiny_model import build_tiny_model

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_KEY = "sk-adaptd-test-admin-" + secrets.token_hex(8)
RUN_ID = secrets.token_hex(4)


def reset_caches() -> None:
    from app.db import get_engine, get_sessionmaker
    from app.settings import get_settings

    get_settings.cache_clear()
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()


def migrate(url: str) -> None:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url)
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    name = f"adaptd_test_{RUN_ID}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    url = f"{base}/{name}"
    migrate(url)
    yield url
    reset_caches()
    from app.db import make_engine

    make_engine(url).dispose()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_url(data_root: Path) -> str:
    url = f"sqlite:///{data_root / 'adaptd.db'}"
    migrate(url)
    return url


DATABASES = ("sqlite", "postgres")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`@pytest.mark.both_databases`: run the test once per database."""
    if "db_url" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("both_databases") is None:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        if isinstance(names, str):
            names = [name.strip() for name in names.split(",")]
        if "db_url" in names:
            return  # a test that names its database keeps it
    metafunc.parametrize("db_url", DATABASES, indirect=True)


@pytest.fixture
def db_url(request: pytest.FixtureRequest) -> str:
    """SQLite, or the database a `both_databases` run or an indirect parametrize names."""
    return request.getfixturevalue(f"{getattr(request, 'param', 'sqlite')}_url")


# Tiers by folder or module (path relative to tests/): what `make test-fast` leaves out.
TIER_BY_PATH = {
    "faults/": "faults",  # API, Redis and worker processes stopped and restarted
    "workers/test_worker_jobs.py": "workers",
    "workers/test_worker_evals.py": "workers",
    "test_fuzz.py": "slow",  # schemathesis over every operation
    "console/": "browser",  # chromium driven by Playwright
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).resolve().parent
    for item in items:
        if item.path.is_relative_to(tests_dir):
            where = item.path.relative_to(tests_dir).as_posix()
            for prefix, tier in TIER_BY_PATH.items():
                if where.startswith(prefix):
                    item.add_marker(tier)
        if "start_worker" in item.fixturenames:
            item.add_marker("workers")
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("db_url") == "postgres"
        if on_postgres or "postgres_url" in item.fixturenames:
            item.add_marker("postgres")


@pytest.fixture
def settings_env(
    db_url: str, data_root: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    """Point the app's settings at this test's database, data folder and the tiny model."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("DATA_DIR", str(data_root))
    monkeypatch.setenv("BASE_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("ADAPTD_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("CELERY_BROKER_URL", REDIS_URL)
    monkeypatch.setenv("CELERY_QUEUE", f"adaptd-test-{RUN_ID}")
    reset_caches()
    from app.settings import get_settings

    yield get_settings()
    reset_caches()


def clean_database() -> None:
    from app.db import get_engine
    from app.models import Base

    with get_engine().begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(text(f"DELETE FROM {table.name}"))


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from app.engine.engine import Engine, EngineConfig
    from app.engine.loader import load_base_model

    loaded = load_base_model(str(tiny_model_dir), tmp_path_factory.mktemp("cache"), "cpu")
    engine = Engine(loaded, EngineConfig(max_queue=64))
    engine.start()
    yield engine
    engine.stop()


@pytest.fixture
def app(settings_env, tiny_engine):
    from app.main import create_app

    clean_database()
    return create_app(engine=tiny_engine, settings=settings_env)


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as c:
        c.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        yield c


def make_tenant_key(client: TestClient, tenant: str) -> str:
    r = client.post("/v1/admin/keys", json={"tenant": tenant, "name": "test"})
    assert r.status_code == 201, r.text
    return r.json()["key"]


@pytest.fixture
def tenant_key(client: TestClient) -> str:
    return make_tenant_key(client, "acme")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server(app) -> Iterator[str]:
    """The app served by a real uvicorn on a local port, for the official openai client."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
