"""Which module names a job may target, on a bare model and on one that serves adapters."""

from pathlib import Path

from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from app.engine.lora_targets import lora_target_names


def test_a_model_holding_adapters_offers_the_same_targets_as_the_bare_model(
    tiny_model_dir: Path,
) -> None:
    """The serving engine's model has peft tuner layers where adapters were loaded: q_proj is
    then a tuner around a Linear, with children (base_layer, lora_A, ...) of peft's own. Jobs
    created after the first adapter is served must still be able to name q_proj."""
    bare = lora_target_names(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    assert {"q_proj", "k_proj", "v_proj", "o_proj"} <= bare
    assert not {"input_layernorm", "self_attn", "layers", "model"} & bare
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    served = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config)
    assert lora_target_names(served) == bare
