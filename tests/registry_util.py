"""Registers a LoRA adapter with random non-zero weights for the tiny model, straight into
the registry (files, then the row), for tests that need an `ft:` variant without training."""

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from app.db import get_sessionmaker
from app.ids import new_id
from app.registry.models import Adapter
from app.settings import get_settings


def register_random_adapter(tenant: str, suffix: str, *, seed: int = 1) -> str:
    settings = get_settings()
    base = AutoModelForCausalLM.from_pretrained(settings.base_model)
    torch.manual_seed(seed)
    config = LoraConfig(
        r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(base, config)
    job = new_id("ftjob-", 6)
    name = f"ft:{Path(settings.base_model).name.lower()}:{suffix}:{job}"
    folder = settings.adapters_dir / job
    peft_model.save_pretrained(str(folder))
    add_adapter_row(tenant, name, job, settings.base_model)
    return name


def add_adapter_row(tenant: str, name: str, job: str, base_model: str) -> None:
    """The registry row of an adapter whose files are already in the store under `job`."""
    with get_sessionmaker()() as session:
        session.add(
            Adapter(
                id=new_id("adapter_"),
                tenant=tenant,
                name=name,
                job_id=job,
                base_model=base_model,
                path=job,
                bytes=0,
                manifest={},
            )
        )
        session.commit()
