"""Log-probabilities from the scheduler: the model's own distribution at each step, the same
whether a row runs alone or in a mixed batch; a stop sequence's tokens are left out."""

import asyncio

import torch

from app.engine import protocol
from app.engine.sampling import SamplingParams
from tests.engine.helpers import TIE_TOLERANCE, Job, reference_logits


def generate(engine, ids, params, adapter=None):
    return asyncio.run(protocol.generate(engine, ids, params, adapter))


def test_logprobs_are_the_models_distribution_at_each_step(make_engine, adapter_refs) -> None:
    engine = make_engine()
    job = Job("The capital of France is", adapter_refs[0])
    ids = job.ids(engine)
    done = generate(
        engine, ids, SamplingParams(max_tokens=6, temperature=0.0, logprobs=3), job.adapter
    )
    assert done.logprobs is not None and len(done.logprobs) == done.completion_tokens == 6
    for k, entry in enumerate(done.logprobs):
        expected = torch.log_softmax(
            reference_logits(engine, ids + list(done.token_ids[:k]), job.adapter).float(), -1
        )
        assert entry.token_id == done.token_ids[k]
        assert abs(entry.logprob - float(expected[entry.token_id])) < TIE_TOLERANCE
        values, top_ids = expected.topk(3)
        assert len(entry.top) == 3
        assert [lp for _, lp in entry.top] == sorted((lp for _, lp in entry.top), reverse=True)
        assert torch.allclose(torch.tensor([lp for _, lp in entry.top]), values, atol=1e-4)
        assert entry.top[0][0] == entry.token_id  # greedy takes the most likely token


def test_batched_rows_get_the_same_logprobs_as_alone(make_engine, adapter_refs) -> None:
    engine = make_engine(batch_wait_ms=300)
    params = SamplingParams(max_tokens=5, temperature=0.0, logprobs=0)
    jobs = [Job("The capital of France is", a) for a in [None, *adapter_refs]]
    alone = [generate(engine, j.ids(engine), params, j.adapter) for j in jobs]

    async def together():
        handles = [engine.submit(j.ids(engine), params, j.adapter) for j in jobs]
        return await asyncio.gather(*(h.result() for h in handles))

    batched = asyncio.run(together())
    assert engine.stats.mixed_forwards > 0
    for a, b in zip(alone, batched, strict=True):
        assert a.token_ids == b.token_ids
        assert all(e.top == () for e in b.logprobs)  # logprobs=0: the chosen token only
        for x, y in zip(a.logprobs, b.logprobs, strict=True):
            assert abs(x.logprob - y.logprob) < TIE_TOLERANCE


def test_no_logprobs_unless_asked_and_stop_tokens_left_out(make_engine) -> None:
    engine = make_engine()
    ids = Job("The capital of France is").ids(engine)
    plain = generate(engine, ids, SamplingParams(max_tokens=8, temperature=0.0))
    assert plain.logprobs is None
    # Stop at the text of the third generated token: its tokens are not in the text.
    third = engine.tokenizer.decode(list(plain.token_ids[2:3]))
    assert third.strip()
    stopped = generate(
        engine, ids, SamplingParams(max_tokens=8, temperature=0.0, stop=(third,), logprobs=0)
    )
    assert stopped.finish_reason == "stop" and len(stopped.token_ids) < 8
    assert len(stopped.logprobs) < len(stopped.token_ids)
