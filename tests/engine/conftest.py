"""Engines on a tiny model, and LoRA adapters for it with random non-zero weights.

The shared tiny model's default init is so flat that it mostly repeats its last input token,
which would hide a row reading another row's keys. Here its weights are redrawn with a larger
spread, so every output token depends on the whole prompt.
"""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from app.engine.adapters import AdapterRef
from app.engine.engine import Engine, EngineConfig
from app.engine.loader import load_base_model
from tests.tiny_model import build_tiny_model

WEIGHT_STD = 0.3


@pytest.fixture(scope="session")
def sharp_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = build_tiny_model(tmp_path_factory.mktemp("models") / "sharp-llama")
    model = AutoModelForCausalLM.from_pretrained(folder)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:  # embeddings and projections; norms stay at 1
                param.copy_(torch.randn(param.shape, generator=generator) * WEIGHT_STD)
    model.save_pretrained(folder)  # same config, new weights; the tokenizer stays
    return folder


@pytest.fixture(scope="session")
def adapter_refs(
    sharp_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> list[AdapterRef]:
    """Three adapters with different targets and ranks, so each changes the output."""
    folder = tmp_path_factory.mktemp("adapters")
    targets = [["q_proj", "v_proj"], ["k_proj", "o_proj"], ["q_proj", "v_proj", "up_proj"]]
    refs = []
    for i, modules in enumerate(targets):
        base = AutoModelForCausalLM.from_pretrained(sharp_model_dir)
        torch.manual_seed(100 + i)
        config = LoraConfig(
            r=4 + 2 * i, lora_alpha=16, target_modules=modules, init_lora_weights=False
        )
        path = folder / f"adapter-{i}"
        get_peft_model(base, config).save_pretrained(str(path))
        # Registry names may hold dots; the engine must cope.
        refs.append(AdapterRef(name=f"ft:tiny-llama.v1:a{i}:job{i}", path=path))
    return refs


@pytest.fixture
def make_engine(
    sharp_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Engine]]:
    """A fresh engine (its own model copy, so loaded adapters never leak between tests)."""
    engines: list[Engine] = []

    def make(start: bool = True, **config) -> Engine:
        loaded = load_base_model(str(sharp_model_dir), tmp_path_factory.mktemp("cache"), "cpu")
        engine = Engine(loaded, EngineConfig(**config))
        if start:
            engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.stop()
