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

import itertools
import os
import secrets
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

from tests.processes import free_port
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


# Tiers: the one place a test's tier is set (the markers are declared in pyproject.toml;
# `make test-fast` leaves out every tier below, `make test` runs them all). No test module
# marks its own tier. A test is in a tier by where it lives (a folder, a module or a test,
# relative to tests/) ...
TIER_BY_PATH = {
    "faults/": "faults",  # API, Redis and worker processes stopped and restarted
    "console/": "browser",  # chromium driven by Playwright
    "e2e/": "e2e",  # the real default model
    "templates/test_e2e_default_model.py": "e2e",
    "vllm/": "vllm",  # real vLLM CPU servers (.venv-vllm)
    "test_fuzz.py": "slow",  # schemathesis over every operation
    # Slow by design: a fresh interpreter, property sweeps, thousands of requests or rows,
    # bodies at the size limits (seconds each where the rest take tenths).
    "templates/test_embeddings_threads.py": "slow",
    "templates/test_sandbox_bounds.py::test_size_bounds_are_never_below_the_real_size": "slow",
    "templates/test_security.py::test_huge_loops_and_recursion": "slow",
    "engine/test_grammar_limits.py::test_schemas_over_the_size_limits_are_refused": "slow",
    "engine/test_structured.py::test_fifty_generated_schemas_yield_valid_json": "slow",
    "files/test_upload_memory.py::test_a_file_of_good_lines_at_the_limit": "slow",
    "files/test_upload_memory.py::test_a_file_of_bad_lines_at_the_limit": "slow",
    # Many requests or rows compared each way (the engine's equivalence checks at scale):
    # each takes seconds; the rest of each module stays in the fast tier.
    "engine/test_structured.py::test_constrained_and_free_rows_in_one_batch": "slow",
    "engine/test_chunked_prefill.py::test_chunked_prefill_gives_the_same_answers": "slow",
    "engine/test_http.py::test_adapter_and_base_stream_the_same_text_as_whole": "slow",
    "engine/test_prefix_cache.py::test_cached_prefix_answers_equal_uncached": "slow",
    "observability/test_metrics.py::test_counters_move_by_exactly_the_traffic_sent": "slow",
    "protocol/test_edge_values.py::test_lone_surrogates_are_refused_wherever": "slow",
    "aliases/test_aliases.py::test_weighted_split_is_close_to_even": "slow",  # 1000 picks
    "aliases/test_aliases.py::test_repoint_under_concurrent_traffic_loses_no_request": "slow",
}
# ... or by what it starts or needs (a fixture it uses, directly or through another).
TIER_BY_FIXTURE = {
    "start_worker": "workers",  # a real `celery worker` process
    "postgres_url": "postgres",
}


def tiers_of(where: str, fixturenames: list[str]) -> set[str]:
    """The tiers of the test at `where` ("folder/test_x.py::test_name") using those fixtures."""
    tiers = {tier for prefix, tier in TIER_BY_PATH.items() if where.startswith(prefix)}
    tiers |= {tier for name, tier in TIER_BY_FIXTURE.items() if name in fixturenames}
    return tiers


def _deselected_by_path(path: Path, config: pytest.Config) -> bool:
    """Whether `-m` leaves out every test of this module whatever else it is marked with
    (its folder or module tier decides): then it is not even imported, so `make test-fast`
    pays nothing for test_fuzz.py building the app's OpenAPI document, or for the browser,
    fault, vLLM and default-model modules."""
    expression = config.getoption("markexpr")
    tests_dir = Path(__file__).resolve().parent
    if not expression or not path.is_relative_to(tests_dir) or path.suffix != ".py":
        return False
    where = path.relative_to(tests_dir).as_posix()
    tiers = {
        tier
        for prefix, tier in TIER_BY_PATH.items()
        if "::" not in prefix and where.startswith(prefix)
    }
    if not tiers:
        return False
    from _pytest.mark.expression import Expression  # how pytest itself reads `-m`

    compiled = Expression.compile(expression)
    declared = [line.split(":")[0].strip() for line in config.getini("markers")]
    others = [name for name in declared if name not in tiers]
    # Any other marker a test of the module may carry (from a fixture, a parametrize).
    for extra in itertools.chain.from_iterable(
        itertools.combinations(others, n) for n in range(len(others) + 1)
    ):
        if compiled.evaluate(tiers.union(extra).__contains__):
            return False
    return True


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    return True if _deselected_by_path(collection_path, config) else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).resolve().parent
    for item in items:
        where = ""
        if item.path.is_relative_to(tests_dir):
            where = f"{item.path.relative_to(tests_dir).as_posix()}::{item.name.split('[')[0]}"
        fixturenames = getattr(item, "fixturenames", [])
        tiers = tiers_of(where, fixturenames)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("db_url") == "postgres":
            tiers.add("postgres")
        for tier in sorted(tiers):
            item.add_marker(tier)


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


@pytest.fixture
def start_worker(settings_env, tmp_path: Path) -> Iterator:
    """`start_worker(pool="solo")`: a real `celery worker` process on this test's database
    and queue, ready when returned, stopped after the test (tests/processes.py)."""
    from tests.processes import WorkerProcess

    workers: list[WorkerProcess] = []

    def start(pool: str = "solo") -> WorkerProcess:
        worker = WorkerProcess(tmp_path, pool).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


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


@pytest.fixture(scope="session")
def default_engine() -> Iterator:
    """The built-in engine on the real default model (SmolLM2-135M-Instruct), loaded once per
    session for every test on it (the e2e tier and the vLLM conformance tests)."""
    from app.engine.engine import Engine
    from app.engine.loader import load_base_model
    from app.settings import DEFAULT_BASE_MODEL, Settings

    loaded = load_base_model(DEFAULT_BASE_MODEL, Settings().model_cache, "cpu")
    engine = Engine(loaded)
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
