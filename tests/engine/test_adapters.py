"""The adapter cache: loaded on first use, a bounded number resident, least recently used
evicted (never one a running row needs), deleted ones unloaded, bad files fail one request."""

import asyncio
import shutil

import pytest

from app.engine.adapters import AdapterRef
from app.engine.errors import AdapterLoadError
from app.errors import engine_api_error
from tests.engine.helpers import Job, assert_same_greedy, run_alone, run_together

PROMPTS = ["The capital of France is", "Review: great film", "positive negative"]


def jobs_for(adapters) -> list[Job]:
    return [Job(p, a, max_tokens=10) for a in adapters for p in PROMPTS]


def test_eviction_and_reload_keep_answers_identical(make_engine, adapter_refs) -> None:
    roomy = make_engine(max_loaded_adapters=3)
    tight = make_engine(max_loaded_adapters=1)
    # a0, a1, a0, a2, a1: with one slot every switch evicts and reloads from disk.
    order = [adapter_refs[i] for i in (0, 1, 0, 2, 1)]
    jobs = jobs_for(order)
    expected = run_alone(roomy, jobs)
    got = run_alone(tight, jobs)
    assert roomy.adapters.loads == 3
    assert tight.adapters.loads == 5
    assert len(tight.adapters.loaded) == 1
    assert tight.adapters.loaded == [adapter_refs[1].name]
    for job, e, g in zip(jobs, expected, got, strict=True):
        assert_same_greedy(roomy, job, e, g)


def test_more_adapters_in_flight_than_slots(make_engine, adapter_refs) -> None:
    """Three adapters requested at once with two slots: the third waits for a slot to free
    up instead of evicting weights a running row is using."""
    reference = make_engine(max_loaded_adapters=3)
    engine = make_engine(max_loaded_adapters=2, batch_wait_ms=300)
    jobs = jobs_for(adapter_refs) + [Job(PROMPTS[0], None, max_tokens=10)]
    expected = run_alone(reference, jobs)
    got = run_together(engine, jobs)
    assert len(engine.adapters.loaded) <= 2
    assert engine.stats.deferred > 0
    assert engine.stats.mixed_forwards > 0
    for job, e, g in zip(jobs, expected, got, strict=True):
        assert_same_greedy(reference, job, e, g)


def test_least_recently_used_is_evicted(make_engine, adapter_refs) -> None:
    engine = make_engine(max_loaded_adapters=2)
    a0, a1, a2 = adapter_refs
    for ref in (a0, a1, a0, a2):  # a1 is the least recently used when a2 arrives
        run_alone(engine, [Job(PROMPTS[0], ref, max_tokens=2)])
    assert sorted(engine.adapters.loaded) == sorted([a0.name, a2.name])
    assert engine.adapters.nbytes(a1.name) == 0
    assert engine.adapters.nbytes(a0.name) > 0


def test_deleted_adapter_is_unloaded(make_engine, adapter_refs) -> None:
    engine = make_engine()
    run_alone(engine, [Job(PROMPTS[0], adapter_refs[0], max_tokens=2)])
    assert engine.adapters.loaded == [adapter_refs[0].name]
    engine.adapters.forget(adapter_refs[0].name)
    run_alone(engine, [Job(PROMPTS[0], None, max_tokens=2)])
    assert engine.adapters.loaded == []
    assert engine.adapters.nbytes(adapter_refs[0].name) == 0
    # With every adapter gone the base model still answers as before.
    fresh = make_engine()
    base = Job(PROMPTS[1], None, max_tokens=8)
    assert_same_greedy(fresh, base, *run_alone(fresh, [base]), *run_alone(engine, [base]))


def test_adapter_registered_later_is_served_without_restart(
    make_engine, adapter_refs, tmp_path
) -> None:
    engine = make_engine()
    run_alone(engine, [Job(PROMPTS[0], adapter_refs[0], max_tokens=2)])
    # A new adapter appears on disk (the registry row comes with it): no restart needed.
    later = AdapterRef("ft:tiny:later:job9", tmp_path / "later")
    shutil.copytree(adapter_refs[2].path, later.path)
    got = run_alone(engine, [Job(PROMPTS[2], later, max_tokens=8)])[0]
    expected = run_alone(engine, [Job(PROMPTS[2], adapter_refs[2], max_tokens=8)])[0]
    assert got.token_ids == expected.token_ids
    assert later.name in engine.adapters.loaded


def test_missing_or_corrupt_files_fail_that_request_only(
    make_engine, adapter_refs, tmp_path
) -> None:
    engine = make_engine(batch_wait_ms=300)
    missing = AdapterRef("ft:tiny:missing:job1", tmp_path / "nowhere")
    corrupt_dir = tmp_path / "corrupt"
    shutil.copytree(adapter_refs[0].path, corrupt_dir)
    (corrupt_dir / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    corrupt = AdapterRef("ft:tiny:corrupt:job2", corrupt_dir)
    good = [Job(PROMPTS[0], adapter_refs[1], max_tokens=6), Job(PROMPTS[1], None, max_tokens=6)]
    expected = run_alone(engine, good)

    async def scenario():
        handles = [
            engine.submit(j.ids(engine), j.params(), j.adapter)
            for j in [*good, Job(PROMPTS[2], missing), Job(PROMPTS[2], corrupt)]
        ]
        return await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)

    ok0, ok1, err_missing, err_corrupt = asyncio.run(scenario())
    assert isinstance(err_missing, AdapterLoadError)
    assert "missing" in err_missing.message and missing.name in err_missing.message
    assert isinstance(err_corrupt, AdapterLoadError)
    assert "corrupt" in err_corrupt.message
    assert err_corrupt.code == "adapter_unavailable"
    api = engine_api_error(err_corrupt)  # what the client gets
    assert (api.status_code, api.type, api.param) == (500, "server_error", "model")
    assert [ok0.token_ids, ok1.token_ids] == [e.token_ids for e in expected]
    assert corrupt.name not in engine.adapters.loaded
    # The engine keeps serving, the bad adapter included once its files are fixed.
    shutil.copy(adapter_refs[0].path / "adapter_model.safetensors", corrupt_dir)
    fixed = run_alone(engine, [Job(PROMPTS[2], corrupt, max_tokens=6)])[0]
    assert fixed.token_ids == run_alone(engine, [Job(PROMPTS[2], adapter_refs[0], 6)])[0].token_ids


def test_memory_per_loaded_adapter_is_its_weights(make_engine, adapter_refs) -> None:
    engine = make_engine()
    for ref in adapter_refs:
        run_alone(engine, [Job(PROMPTS[0], ref, max_tokens=1)])
        held = engine.adapters.nbytes(ref.name)
        on_disk = (ref.path / "adapter_model.safetensors").stat().st_size
        assert 0 < held <= on_disk  # fp32 on CPU, as saved: no copies beyond the file
    with pytest.raises(KeyError):
        engine.adapters.peft.peft_config[adapter_refs[0].name]  # peft sees safe labels only
