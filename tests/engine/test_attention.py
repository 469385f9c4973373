"""The engine's CPU decode attention gives SDPA's result, and hands everything else to SDPA."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from app.engine.attention import NAME, decode_attention, use_decode_attention


def attention_inputs(rows: int, queries: int, keys: int, dtype: torch.dtype):
    g = torch.Generator().manual_seed(0)
    heads, kv_heads, dim = 6, 2, 16
    query = torch.randn(rows, heads, queries, dim, generator=g).to(dtype)
    key = torch.randn(rows, kv_heads, keys, dim, generator=g).to(dtype)
    value = torch.randn(rows, kv_heads, keys, dim, generator=g).to(dtype)
    module = SimpleNamespace(num_key_value_groups=heads // kv_heads, training=False, is_causal=True)
    return module, query, key, value


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("masked", [False, True])
def test_decode_step_matches_sdpa(dtype: torch.dtype, masked: bool) -> None:
    module, query, key, value = attention_inputs(rows=3, queries=1, keys=7, dtype=dtype)
    mask = None
    if masked:  # left padding of different widths, as the scheduler's rows have
        mask = torch.ones(3, 1, 1, 7, dtype=torch.bool)
        mask[0, ..., :2] = False
        mask[2, ..., :5] = False
    want, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.25)
    got, weights = decode_attention(module, query, key, value, mask, scaling=0.25)
    assert weights is None
    assert got.shape == want.shape == (3, 1, 6, 16)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.float(), want.float(), atol=tolerance, rtol=tolerance)


def test_padded_keys_are_ignored() -> None:
    module, query, key, value = attention_inputs(rows=1, queries=1, keys=5, dtype=torch.float32)
    mask = torch.tensor([[[[False, False, True, True, True]]]])
    got, _ = decode_attention(module, query, key, value, mask)
    scrambled = value.clone()
    scrambled[:, :, :2] = 1e4  # what a padded position holds must not matter
    again, _ = decode_attention(module, query, key, scrambled, mask)
    torch.testing.assert_close(got, again)


def test_prefill_goes_to_sdpa() -> None:
    module, query, key, value = attention_inputs(rows=2, queries=4, keys=4, dtype=torch.float32)
    want, _ = sdpa_attention_forward(module, query, key, value, None)
    got, _ = decode_attention(module, query, key, value, None)
    torch.testing.assert_close(got, want)


def test_model_generates_as_with_sdpa(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.tensor([[5, 9, 3, 7, 1], [0, 0, 4, 8, 2]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    settings = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    with torch.inference_mode():
        want = model.generate(input_ids=ids, attention_mask=mask, **settings)
        use_decode_attention(model)
        assert model.config._attn_implementation == NAME
        got = model.generate(input_ids=ids, attention_mask=mask, **settings)
    assert torch.equal(got, want)
