"""presence_penalty, frequency_penalty and logit_bias: applied per row to the logits before
the token is picked, exactly as OpenAI defines them."""

import asyncio

import torch

from app.engine import protocol
from app.engine.sampling import SamplingParams, adjust_logits
from tests.engine.helpers import Job, reference_logits


def generate(engine, ids, params, adapter=None):
    return asyncio.run(protocol.generate(engine, ids, params, adapter))


def test_adjust_logits_formula() -> None:
    logits = torch.zeros(6)
    params = SamplingParams(presence_penalty=0.5, frequency_penalty=0.25, logit_bias=((5, 3.0),))
    out = adjust_logits(logits, params, generated=[1, 1, 2])
    assert out.tolist() == [0.0, -1.0, -0.75, 0.0, 0.0, 3.0]
    assert logits.tolist() == [0.0] * 6  # the model's logits are left alone


def test_penalised_greedy_matches_a_step_by_step_reference(make_engine, adapter_refs) -> None:
    engine = make_engine(batch_wait_ms=300)
    params = SamplingParams(
        max_tokens=16, temperature=0.0, presence_penalty=1.5, frequency_penalty=1.0, logprobs=0
    )
    job = Job("positive negative", adapter_refs[0])
    ids = job.ids(engine)

    async def with_neighbours():  # in a mixed batch beside unpenalised rows
        plain = SamplingParams(max_tokens=16, temperature=0.0)
        handles = [
            engine.submit(ids, params, job.adapter),
            engine.submit(ids, plain, job.adapter),
            engine.submit(Job("The capital of France is").ids(engine), plain),
        ]
        return await asyncio.gather(*(h.result() for h in handles))

    penalised, unpenalised, _ = asyncio.run(with_neighbours())
    # The reference (after the run: the adapter is loaded by now), one unbatched step at a time.
    expected: list[int] = []
    while len(expected) < params.max_tokens:
        logits = adjust_logits(
            reference_logits(engine, ids + expected, job.adapter), params, expected
        )
        token = int(logits.argmax())
        if token in engine.eos_ids:
            break
        expected.append(token)

    assert list(penalised.token_ids) == expected
    # Unpenalised, this row repeats tokens; the penalties change its answer.
    assert len(set(unpenalised.token_ids)) < len(unpenalised.token_ids)
    assert penalised.token_ids != unpenalised.token_ids


def test_logit_bias_forces_and_bans_tokens(make_engine) -> None:
    engine = make_engine()
    ids = Job("The capital of France is").ids(engine)
    plain = generate(engine, ids, SamplingParams(max_tokens=4, temperature=0.0))
    forced_id = Job("Paris").ids(engine)[0]
    forced = generate(
        engine, ids, SamplingParams(max_tokens=4, temperature=0.0, logit_bias=((forced_id, 100.0),))
    )
    assert list(forced.token_ids) == [forced_id] * 4
    first = plain.token_ids[0]
    banned = generate(
        engine, ids, SamplingParams(max_tokens=4, temperature=0.0, logit_bias=((first, -100.0),))
    )
    assert first not in banned.token_ids
