"""Template prefixes: their keys and values are computed once per (adapter, prefix) and
reused, and answers are the same as without the cache."""

import copy

from app.engine.prefix_cache import PrefixCache
from app.engine.prompts import encode, render_chat, shared_chat_prefix
from app.engine.requests import Finished
from tests.engine.helpers import (
    FEW_SHOT,
    Job,
    LogitsRecorder,
    assert_same_greedy,
    few_shot_job,
    reference_greedy,
    run_alone,
    run_together,
)
from tests.tiny_model import CHATML

QUESTIONS = ["Review: great movie ->", "Review: terrible film ->", "Review: what a review ->"]


def test_cached_prefix_answers_equal_uncached(make_engine, adapter_refs) -> None:
    plain = make_engine(batch_wait_ms=300, prefix_cache_entries=0)
    cached = make_engine(batch_wait_ms=300, prefix_cache_entries=4)
    recorder_plain, recorder_cached = LogitsRecorder(plain), LogitsRecorder(cached)
    jobs = [few_shot_job(plain, q, a) for q in QUESTIONS for a in (None, adapter_refs[0])]

    expected = run_alone(plain, jobs)
    assert plain.prefixes.hits == plain.prefixes.misses == 0
    got = run_alone(cached, jobs)
    # One entry per variant: the first request of each computed it, the others reused it.
    assert len(cached.prefixes) == 2
    assert cached.prefixes.misses == 2
    assert cached.prefixes.hits == len(jobs) - 2
    for job, e, g in zip(jobs, expected, got, strict=True):
        logits = (recorder_plain.take(plain, job), recorder_cached.take(cached, job))
        assert_same_greedy(plain, job, e, g, logits)
    # The cached run really skipped the prefix: about one prefill of it per variant.
    prefix = jobs[0].prefix_len
    saved = plain.stats.prompt_tokens_run - cached.stats.prompt_tokens_run
    assert saved == prefix * (len(jobs) - 2)


def test_prefixed_and_plain_rows_share_a_batch(make_engine, adapter_refs) -> None:
    """Rows with a cached prefix, a different prefix length, or none, in one forward pass."""
    engine = make_engine(batch_wait_ms=300, prefix_cache_entries=4)
    warm = [
        few_shot_job(engine, QUESTIONS[0], None),
        few_shot_job(engine, QUESTIONS[0], adapter_refs[1]),
    ]
    run_alone(engine, warm)
    short = Job("Classify the sentiment. Review: great film", adapter_refs[1], max_tokens=10)
    short.prefix_len = 4
    jobs = [
        few_shot_job(engine, QUESTIONS[1], None),
        few_shot_job(engine, QUESTIONS[2], adapter_refs[1]),
        Job("The capital of France is", adapter_refs[0], max_tokens=10),  # no prefix
        short,
        # A prefix_len covering the whole prompt still leaves one token to run.
        Job("positive negative", None, max_tokens=6, prefix_len=99),
    ]
    results = run_together(engine, jobs)
    assert engine.stats.mixed_forwards > 0
    assert engine.prefixes.hits >= 2
    for job, result in zip(jobs, results, strict=True):
        expected = Finished("", 0, 0, "", tuple(reference_greedy(engine, job)))
        assert_same_greedy(engine, job, expected, result)


def test_prefix_entries_are_per_adapter_and_bounded(make_engine, adapter_refs) -> None:
    engine = make_engine(batch_wait_ms=0, prefix_cache_entries=2)
    for adapter in [None, *adapter_refs]:
        run_alone(engine, [few_shot_job(engine, QUESTIONS[0], adapter)])
    assert len(engine.prefixes) == 2  # four variants, two entries kept
    assert engine.prefixes.hits == 0  # an adapter never reuses another variant's prefix
    # Least recently used went first: the last two variants are still cached.
    run_alone(engine, [few_shot_job(engine, QUESTIONS[1], adapter_refs[2])])
    assert engine.prefixes.hits == 1
    run_alone(engine, [few_shot_job(engine, QUESTIONS[1], None)])
    assert engine.prefixes.misses == 5


def test_forgetting_an_adapter_drops_its_prefixes(make_engine, adapter_refs) -> None:
    engine = make_engine(batch_wait_ms=0, prefix_cache_entries=4)
    run_alone(engine, [few_shot_job(engine, QUESTIONS[0], adapter_refs[0])])
    run_alone(engine, [few_shot_job(engine, QUESTIONS[0], None)])
    assert len(engine.prefixes) == 2
    engine.adapters.forget(adapter_refs[0].name)
    run_alone(engine, [Job("The capital of France is", None, max_tokens=2)])
    assert len(engine.prefixes) == 1
    assert adapter_refs[0].name not in engine.adapters.loaded


def test_prefix_cache_lru_unit() -> None:
    cache = PrefixCache(2)
    cache.put(("a", (1,)), [])
    cache.put(("b", (1,)), [])
    assert cache.get(("a", (1,))) == []  # a is now the most recent
    cache.put(("c", (1,)), [])
    assert cache.get(("b", (1,))) is None
    assert cache.get(("a", (1,))) == [] and cache.get(("c", (1,))) == []
    assert (cache.hits, cache.misses) == (3, 1)
    assert not PrefixCache(0).enabled
    assert FEW_SHOT  # the shared prefix the other tests use is non-empty


def chat_job(engine, question: str, adapter=None) -> Job:
    text = render_chat(engine.tokenizer, [{"role": "user", "content": question}])
    return Job(text, adapter, max_tokens=8)  # prefix_len 0: the engine finds the header


def test_chat_header_is_served_from_the_prefix_cache(make_engine, adapter_refs) -> None:
    plain = make_engine(batch_wait_ms=0, prefix_cache_entries=0)
    cached = make_engine(batch_wait_ms=0, prefix_cache_entries=4)
    header = cached.chat_prefix
    assert header and cached.tokenizer.decode(header).startswith("<|im_start|>user")
    recorder_plain, recorder_cached = LogitsRecorder(plain), LogitsRecorder(cached)
    jobs = [chat_job(plain, q, a) for q in QUESTIONS for a in (None, adapter_refs[0])]
    expected = run_alone(plain, jobs)
    got = run_alone(cached, jobs)
    assert (cached.prefixes.misses, cached.prefixes.hits) == (2, len(jobs) - 2)
    assert plain.stats.prompt_tokens_run - cached.stats.prompt_tokens_run == len(header) * (
        len(jobs) - 2
    )
    for job, e, g in zip(jobs, expected, got, strict=True):
        logits = (recorder_plain.take(plain, job), recorder_cached.take(cached, job))
        assert_same_greedy(plain, job, e, g, logits)


def test_shared_chat_prefix_covers_a_default_system_prompt(make_engine) -> None:
    tokenizer = copy.deepcopy(make_engine(start=False).tokenizer)
    tokenizer.chat_template = (
        "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nBe brief.<|im_end|>\n"
        "{% endif %}" + CHATML
    )
    header = shared_chat_prefix(tokenizer)
    decoded = tokenizer.decode(header)
    assert decoded.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user")
    own_system = render_chat(
        tokenizer, [{"role": "system", "content": "Be long."}, {"role": "user", "content": "Hi"}]
    )
    assert encode(tokenizer, own_system)[: len(header)] != header  # not wrongly shared

    tokenizer.chat_template = "{{ raise_exception('needs two turns') }}"
    assert shared_chat_prefix(tokenizer) == []
