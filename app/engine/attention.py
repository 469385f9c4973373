"""Attention for the built-in engine on CPU: two plain matmuls at decode steps, SDPA otherwise.

At a decode step (one query per row) PyTorch's CPU SDPA takes its fused kernel when no row is
padded, and that kernel cost 30 % of a 16-row bf16 step of the default model (profiled here),
though the arithmetic is tiny. The same attention as two batched matmuls (the query heads that
share a key/value head together, so keys and values are never repeated) with the softmax in
fp32 made the whole step 1.35x faster in bf16 without padding, 1.05-1.10x with it, 1.02-1.04x
in fp32 and the same at one row (bench/attention.py). Prefill keeps SDPA, whose fused kernel
pays there. Registered with transformers as an attention implementation; the mask is SDPA's
(boolean, True where a row may attend, or None when every position may)"""

from typing import Any

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "adaptd_decode"


def decode_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # (rows, heads, queries, head_dim)
    key: torch.Tensor,  # (rows, kv_heads, keys, head_dim)
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    plain = not any(kwargs.get(k) is not None for k in ("softcap", "sliding_window", "s_aux"))
    if query.shape[2] != 1 or module.training or not plain:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    rows, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    scale = scaling if scaling is not None else dim**-0.5
    # The query heads that share a key/value head become that head's rows of queries.
    grouped = query.view(rows, kv_heads, heads // kv_heads, dim)
    scores = torch.matmul(grouped, key.transpose(2, 3)).float().mul_(scale)
    if attention_mask is not None:  # (rows, 1, 1, keys): broadcasts over heads
        if attention_mask.dtype == torch.bool:
            scores.masked_fill_(~attention_mask, float("-inf"))
        else:
            scores += attention_mask
    weights = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(weights, value)  # (rows, kv_heads, group, head_dim)
    return out.view(rows, 1, heads, dim), None


def use_decode_attention(model: PreTrainedModel) -> None:
    """Switch `model` (on CPU) to `decode_attention`; other devices keep their kernels."""
    if model.device.type != "cpu":
        return
    AttentionInterface.register(NAME, decode_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
