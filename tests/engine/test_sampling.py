"""Batched token picking: the same tokens as one row at a time, greedy ties included."""

import torch

from app.engine.sampling import Sampler, SamplingParams, greedy_tokens, sample_rows


def one_row_reference(logits: torch.Tensor, params: SamplingParams, seed: int) -> int:
    """What a row's sampler drew before batching: its own softmax, top_p cut and draw."""
    generator = torch.Generator().manual_seed(seed)
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        sorted_probs[cumulative - sorted_probs > params.top_p] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator).item())


def test_greedy_tokens_pick_the_first_of_tied_maxima_like_argmax() -> None:
    generator = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        # Rounded to integers: many ties, which bf16 logits have far more often than fp32.
        logits = (torch.randn(16, 4096, generator=generator) * 2).round().to(dtype)
        assert greedy_tokens(logits) == logits.argmax(dim=-1).tolist()
    tied = torch.tensor([[1.0, 3.0, 3.0, 0.0], [5.0, 5.0, 5.0, 5.0]], dtype=torch.bfloat16)
    assert greedy_tokens(tied) == [1, 0]


def test_batched_sampling_draws_what_each_row_would_alone() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 300, generator=generator) * 3
    params = [
        SamplingParams(temperature=1.0, seed=11),
        SamplingParams(temperature=0.7, top_p=0.9, seed=12),
        SamplingParams(temperature=1.3, top_p=0.5, seed=13),
        SamplingParams(temperature=0.5, seed=14),
        SamplingParams(temperature=1.0, top_p=0.01, seed=15),  # only the top token survives
    ]
    for _ in range(3):  # several steps: each generator advances as it would alone
        samplers = [Sampler(p) for p in params]
        batched = [sample_rows(logits, samplers) for _ in range(4)]
        for i, p in enumerate(params):
            alone = Sampler(p)
            draws = [alone(logits[i]) for _ in range(4)]
            assert [step[i] for step in batched] == draws
        assert all(step[4] == int(logits[4].argmax()) for step in batched)
        # And against the per-row code this replaced, for the first draw.
        assert [batched[0][i] for i in range(5)] == [
            one_row_reference(logits[i], p, p.seed or 0) for i, p in enumerate(params)
        ]


def test_sampled_rows_in_bf16_logits() -> None:
    logits = (torch.randn(3, 200, generator=torch.Generator().manual_seed(2)) * 4).bfloat16()
    params = [SamplingParams(temperature=0.8, top_p=0.95, seed=i) for i in range(3)]
    got = sample_rows(logits, [Sampler(p) for p in params])
    assert got == [one_row_reference(logits[i], p, i) for i, p in enumerate(params)]
