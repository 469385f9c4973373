"""Greedy parity: 50 chat prompts x 24 tokens on the default model in float32, through the
built-in engine and through vLLM, compared token for token."""

import asyncio

from app.engine.prompts import encode, render_chat
from app.engine.protocol import generate
from app.engine.sampling import SamplingParams

SUBJECTS = [
    "France",
    "the moon",
    "a bicycle",
    "honey bees",
    "the ocean",
    "volcanoes",
    "the piano",
    "winter",
    "a lighthouse",
    "chess",
]
FORMS = [
    "Tell me one fact about {}.",
    "Describe {} in one sentence.",
    "Write a short poem about {}.",
    "Why do people like {}?",
    "What is {}?",
]
PROMPTS = [form.format(subject) for subject in SUBJECTS for form in FORMS]


def first_difference(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def test_greedy_parity_50_prompts(local_engine, vllm_engine) -> None:
    assert len(PROMPTS) == 50
    tok = local_engine.tokenizer
    ids = [encode(tok, render_chat(tok, [{"role": "user", "content": p}])) for p in PROMPTS]
    params = SamplingParams(max_tokens=24, temperature=0)

    async def run(engine) -> list:
        return await asyncio.gather(*(generate(engine, p, params) for p in ids))

    ours = asyncio.run(run(local_engine))
    theirs = asyncio.run(run(vllm_engine))
    same = sum(a.token_ids == b.token_ids for a, b in zip(ours, theirs, strict=True))
    print(f"\ngreedy parity: {same}/50 identical token for token (24 tokens, float32)")
    for prompt, a, b in zip(PROMPTS, ours, theirs, strict=True):
        if a.token_ids != b.token_ids:
            print(f"  differs at token {first_difference(a.token_ids, b.token_ids)}: {prompt!r}")
    assert same >= 45  # float32 on both sides: only near-ties may flip
