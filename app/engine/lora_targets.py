"""Which of a model's modules a LoRA adapter can target, by the names jobs give them.

A job names target modules by their last name component ("q_proj"); peft wraps every module
whose name ends in it, and refuses a module of a type it cannot adapt (a norm, an attention
block, the whole model). So a name is a valid target when it names at least one module and
every module it names is a layer LoRA adapts: Linear, Embedding or a convolution.
"""

from collections.abc import Iterable

import torch
from transformers.pytorch_utils import Conv1D

LORA_LAYER_TYPES = (
    torch.nn.Linear,
    torch.nn.Embedding,
    torch.nn.Conv1d,
    torch.nn.Conv2d,
    torch.nn.Conv3d,
    Conv1D,  # GPT-2 style linear layers
)


def lora_target_names(model: torch.nn.Module) -> set[str]:
    """The last name components whose every module LoRA can adapt.

    The serving engine's model holds the adapters it has loaded: peft has replaced each
    adapted layer by a tuner layer around the original (`get_base_layer()`), with children of
    its own (`base_layer`, `lora_A`, ...). A tuner layer counts as the layer it wraps, and
    its children are not the base model's."""
    adaptable: dict[str, bool] = {}
    wrapped: list[str] = []  # tuner layers' names, whose children are peft's
    for name, module in model.named_modules():
        if not name or any(name.startswith(w + ".") for w in wrapped):
            continue  # the model itself, or inside a tuner layer
        base = getattr(module, "get_base_layer", None)
        if base is not None:
            wrapped.append(name)
            module = base()
        last = name.rsplit(".", 1)[-1]
        adaptable[last] = adaptable.get(last, True) and isinstance(module, LORA_LAYER_TYPES)
    return {name for name, ok in adaptable.items() if ok}


def unusable_targets(targets: Iterable[str], target_names: set[str]) -> str | None:
    """Why `targets` cannot all take LoRA (a message naming them), or None."""
    bad = [t for t in targets if t not in target_names]
    if not bad:
        return None
    examples = ", ".join(sorted(target_names)[:8])
    return (
        f"target_modules must name Linear, Embedding or convolution layers of the base model; "
        f"not such a layer or not found: {', '.join(bad)} (for example: {examples})"
    )
