"""End-to-end on the real default model (SmolLM2-135M-Instruct from the packaged GGUF)."""

import pytest
from fastapi.testclient import TestClient

from app.engine.engine import Engine
from app.engine.loader import load_base_model
from app.settings import DEFAULT_BASE_MODEL, get_settings
from tests.conftest import ADMIN_KEY, clean_database

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def default_engine():
    loaded = load_base_model(DEFAULT_BASE_MODEL, get_settings().model_cache, "cpu")
    engine = Engine(loaded)
    engine.start()
    yield engine
    engine.stop()


@pytest.fixture
def default_client(settings_env, default_engine, monkeypatch):
    from app.main import create_app

    monkeypatch.setenv("BASE_MODEL", DEFAULT_BASE_MODEL)
    clean_database()
    with TestClient(create_app(engine=default_engine, settings=settings_env)) as c:
        c.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        yield c


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_capital_of_france(default_client: TestClient) -> None:
    r = default_client.post(
        "/v1/chat/completions",
        json={
            "model": DEFAULT_BASE_MODEL,
            "max_tokens": 20,
            "temperature": 0,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert "Paris" in body["choices"][0]["message"]["content"]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert default_client.get("/v1/models").json()["data"][0]["id"] == DEFAULT_BASE_MODEL
