"""DTYPE: the engine's weights, adapters and prefix caches in one dtype, picked by `auto` from
the device and the CPU's flags."""

from pathlib import Path

import pytest
import torch

from app.engine.adapters import AdapterCache, adapter_dtype
from app.engine.engine import Engine, EngineConfig
from app.engine.factory import build_engine
from app.engine.loader import cpu_flags, load_base_model, resolve_dtype, training_autocast
from app.settings import Settings
from tests.engine.helpers import Job, few_shot_job, reference_greedy, run_alone, run_together

CPU = torch.device("cpu")
# Flags as /proc/cpuinfo names them, for x86 CPUs with and without native bf16.
AVX2_ONLY = frozenset(["fpu", "sse", "sse2", "avx", "avx2", "fma"])
SAPPHIRE_RAPIDS = AVX2_ONLY | {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
COOPER_LAKE = AVX2_ONLY | {"avx512f", "avx512_bf16"}
AMX_ONLY = AVX2_ONLY | {"amx_bf16"}


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (AVX2_ONLY, torch.float32),
        (AVX2_ONLY | {"avx512f", "avx512_vnni"}, torch.float32),  # AVX-512 without bf16
        (COOPER_LAKE, torch.bfloat16),
        (AMX_ONLY, torch.bfloat16),
        (SAPPHIRE_RAPIDS, torch.bfloat16),
        (frozenset(), torch.float32),  # no /proc/cpuinfo
    ],
)
def test_auto_on_cpu_follows_the_flags(flags: frozenset[str], expected: torch.dtype) -> None:
    assert resolve_dtype("auto", CPU, flags) == expected


def test_auto_on_cuda_is_bf16_and_named_dtypes_win() -> None:
    assert resolve_dtype("auto", torch.device("cuda"), AVX2_ONLY) == torch.bfloat16
    assert resolve_dtype("float32", CPU, SAPPHIRE_RAPIDS) == torch.float32
    assert resolve_dtype("float32", torch.device("cuda")) == torch.float32
    assert resolve_dtype("bfloat16", CPU, AVX2_ONLY) == torch.bfloat16
    assert resolve_dtype("auto", torch.device("mps"), SAPPHIRE_RAPIDS) == torch.float32
    with pytest.raises(ValueError):
        resolve_dtype("float16", CPU, SAPPHIRE_RAPIDS)


def test_training_autocast_only_on_cpu_and_where_asked() -> None:
    assert training_autocast("off", CPU, SAPPHIRE_RAPIDS) is None
    assert training_autocast("auto", CPU, SAPPHIRE_RAPIDS) == "bfloat16"
    assert training_autocast("auto", CPU, AVX2_ONLY) is None
    assert training_autocast("bfloat16", CPU, AVX2_ONLY) == "bfloat16"
    # CUDA trains in bf16 weights already: no autocast on top.
    assert training_autocast("bfloat16", torch.device("cuda"), SAPPHIRE_RAPIDS) is None


def test_cpu_flags_reads_the_flags_line(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512_bf16 amx_bf16\n\n"
        "processor\t: 1\nflags\t\t: fpu avx2 avx512_bf16 amx_bf16\n"
    )
    assert cpu_flags(info) == {"fpu", "avx2", "avx512_bf16", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_adapter_dtype_follows_the_model_except_bf16_on_cpu() -> None:
    """bf16 LoRA matmuls at rank 8-64 are slower than fp32 ones on CPU: adapters stay fp32
    there, and follow the model's dtype elsewhere."""
    cuda = torch.device("cuda")
    assert adapter_dtype(cuda, torch.bfloat16) == torch.bfloat16
    assert adapter_dtype(cuda, torch.float32) == torch.float32
    assert adapter_dtype(CPU, torch.float32) == torch.float32
    assert adapter_dtype(CPU, torch.bfloat16) == torch.float32


def test_adapters_are_cast_to_the_adapter_dtype(sharp_model_dir: Path, adapter_refs) -> None:
    """Whatever peft would pick, the cache holds adapter weights in its dtype (bf16 here, as
    on CUDA; peft would upcast them to fp32 for training's sake)."""
    loaded = load_base_model(str(sharp_model_dir), sharp_model_dir.parent / "c", "cpu", "bfloat16")
    cache = AdapterCache(loaded.model, 2, torch.bfloat16)
    assert cache.ensure(adapter_refs[0])
    assert cache.peft is not None
    lora = {p.dtype for name, p in cache.peft.named_parameters() if ".lora_" in name}
    assert lora == {torch.bfloat16}


def test_dtype_setting_is_validated() -> None:
    assert Settings().dtype == "auto"
    assert Settings(dtype="bfloat16").dtype == "bfloat16"
    with pytest.raises(ValueError):
        Settings(dtype="float16")
    assert Settings(train_autocast="bfloat16").train_autocast == "bfloat16"
    with pytest.raises(ValueError):
        Settings(train_autocast="float16")


@pytest.fixture
def bf16_engine(sharp_model_dir: Path, tmp_path: Path):
    engines: list[Engine] = []

    def make(dtype: str = "bfloat16", **config) -> Engine:
        loaded = load_base_model(str(sharp_model_dir), tmp_path / "cache", "cpu", dtype)
        engine = Engine(loaded, EngineConfig(**config))
        engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.stop()


def test_engine_loads_in_the_chosen_dtype(sharp_model_dir: Path, tmp_path: Path) -> None:
    for setting, dtype in (("bfloat16", torch.bfloat16), ("float32", torch.float32)):
        settings = Settings(
            base_model=str(sharp_model_dir), model_cache=tmp_path, device="cpu", dtype=setting
        )
        engine = build_engine(settings)
        try:
            assert isinstance(engine, Engine)
            assert engine.dtype == dtype
            assert {p.dtype for p in engine.model.parameters()} == {dtype}
            assert engine.health()["dtype"] == setting
        finally:
            engine.stop()
    settings = Settings(base_model=str(sharp_model_dir), model_cache=tmp_path, device="cpu")
    engine = build_engine(settings)
    try:
        assert engine.health()["dtype"] == str(resolve_dtype("auto", CPU)).removeprefix("torch.")
    finally:
        engine.stop()


def test_adapters_and_prefix_caches_follow_the_dtype(bf16_engine, adapter_refs) -> None:
    engine = bf16_engine(prefix_cache_entries=4)
    jobs = [few_shot_job(engine, "Review: great film ->", ref) for ref in adapter_refs]
    jobs.append(few_shot_job(engine, "Review: a terrible movie ->"))
    run_together(engine, jobs)
    assert engine.adapters.has_adapters
    params = list(engine.adapters.peft.named_parameters())
    assert {p.dtype for name, p in params if ".lora_" in name} == {torch.float32}  # see below
    assert {p.dtype for name, p in params if ".lora_" not in name} == {torch.bfloat16}
    assert len(engine.prefixes) == len(adapter_refs) + 1
    kinds = {t.dtype for kv in engine.prefixes._entries.values() for k, v in kv for t in (k, v)}
    assert kinds == {torch.bfloat16}


def test_greedy_output_in_bf16_matches_plain_forward_passes(bf16_engine, adapter_refs) -> None:
    """Greedy answers in bf16, alone and batched with adapters, against unbatched bf16
    forward passes (bf16 rounding may flip a near-tie, so most, not all, must agree)."""
    engine = bf16_engine()
    prompts = ["The capital of France is", "Review: great film", "positive negative", "What is"]
    jobs = [Job(p, a, max_tokens=8) for p in prompts for a in (None, *adapter_refs)]
    alone = run_alone(engine, jobs)
    together = run_together(engine, jobs)
    assert all(f.finish_reason in ("stop", "length") for f in alone + together)
    assert all(f.completion_tokens > 0 for f in alone)
    same_as_reference = sum(
        list(f.token_ids) == reference_greedy(engine, job)
        for job, f in zip(jobs, alone, strict=True)
    )
    same_batched = sum(a.token_ids == b.token_ids for a, b in zip(alone, together, strict=True))
    assert same_as_reference >= 0.75 * len(jobs), (same_as_reference, len(jobs))
    assert same_batched >= 0.75 * len(jobs), (same_batched, len(jobs))


def test_output_layer_gets_a_contiguous_input_with_adapters_loaded(
    bf16_engine, adapter_refs
) -> None:
    """With an adapter loaded (peft freezes the base weights), a bf16 linear on the
    non-contiguous slice transformers passes to the output layer is ~300x slower on CPU."""
    engine = bf16_engine()
    seen: list[bool] = []
    head = engine.model.get_output_embeddings()
    head.register_forward_pre_hook(lambda _m, args: seen.append(args[0].is_contiguous()))
    run_together(engine, [Job("The capital of France is", adapter_refs[0], max_tokens=3)] * 2)
    assert not head.weight.requires_grad  # peft froze it
    assert seen and all(seen)
