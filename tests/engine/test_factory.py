"""ENGINE picks the engine in one place, for the API and the workers."""

import pytest

from app.engine.engine import Engine
from app.engine.factory import build_engine
from app.engine.protocol import InferenceEngine
from app.settings import Settings


def test_local_engine_is_the_default_and_implements_the_interface(tiny_model_dir, tmp_path):
    settings = Settings(base_model=str(tiny_model_dir), model_cache=tmp_path, device="cpu")
    assert settings.engine == "local"
    engine = build_engine(settings)
    try:
        assert isinstance(engine, Engine) and isinstance(engine, InferenceEngine)
        assert engine.running
        assert engine.health()["engine"] == "local"
        assert {"q_proj", "v_proj"} <= engine.lora_target_names()
    finally:
        engine.stop()


def test_unknown_engine_is_refused() -> None:
    with pytest.raises(ValueError):
        Settings(engine="tgi")


def test_adapter_store_setting(tmp_path) -> None:
    assert Settings(data_dir=tmp_path).adapters_dir == tmp_path / "adapters"
    store = tmp_path / "shared-mount"
    assert Settings(data_dir=tmp_path, adapter_store=store).adapters_dir == store
    urls = Settings(vllm_urls=" http://a:8000/ ,http://b:8000,").vllm_url_list
    assert urls == ["http://a:8000", "http://b:8000"]
