"""The database briefly unreachable: /readyz fails, requests get 503, then all recovers
without a restart."""

import time
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ADMIN_KEY, reset_caches
from tests.tcp_proxy import TcpProxy


@pytest.fixture
def proxied_client(postgres_url, data_root, tiny_model_dir, tiny_engine, monkeypatch):
    parts = urlsplit(postgres_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    proxy.start()
    url = postgres_url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("DATA_DIR", str(data_root))
    monkeypatch.setenv("BASE_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("ADAPTD_ADMIN_KEY", ADMIN_KEY)
    reset_caches()
    from app.main import create_app
    from app.settings import get_settings

    with TestClient(create_app(engine=tiny_engine, settings=get_settings())) as c:
        c.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        yield c, proxy
    proxy.cut()
    reset_caches()


def test_outage_gives_503_then_recovers(proxied_client) -> None:
    client, proxy = proxied_client
    assert client.get("/readyz").status_code == 200
    assert client.get("/v1/models").status_code == 200

    proxy.cut()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] is False
    r = client.get("/v1/models")
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "database_unavailable"
    assert "retry-after" in r.headers

    proxy.start()  # same port: the pool reconnects by itself
    deadline = time.monotonic() + 30
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "did not recover"
        time.sleep(0.2)
    assert client.get("/v1/models").status_code == 200
