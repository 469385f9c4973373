"""The engine's per-row LoRA path against peft's own `adapter_names=` path: same logits for
every row, whether an adapter's rows are contiguous (a slice) or scattered (an index)."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

import app.engine.adapters as adapters_module
from app.engine.adapters import (
    BASE,
    AdapterCache,
    AdapterRef,
    adapter_dtype,
    peft_label,
    plan_rows,
)
from app.engine.loader import load_base_model


def test_plan_uses_slices_for_contiguous_rows_and_indices_otherwise() -> None:
    plan = plan_rows(["a", "a", BASE, "b", "a"], torch.device("cpu"))
    groups = dict(plan.groups)
    assert set(groups) == {"a", "b"}  # the base model's rows need no update
    assert torch.equal(groups["a"], torch.tensor([0, 1, 4]))
    assert groups["b"] == slice(3, 4)
    assert plan_rows([BASE, BASE], torch.device("cpu")).groups == []


@pytest.mark.parametrize(
    "pattern",
    [
        [0, None, 0, 1, 2, None],  # adapter 0's rows are scattered: index path
        [0, 0, 1, None, None, 2],  # every adapter's rows side by side: slice path
        [None, None, None, None, None, None],  # base rows only
    ],
)
def test_grouped_rows_match_peft(make_engine, adapter_refs, monkeypatch, pattern) -> None:
    engine = make_engine(start=False)
    for ref in adapter_refs:
        assert engine.adapters.ensure(ref)
    labels = [BASE if i is None else peft_label(adapter_refs[i].name) for i in pattern]
    ids = torch.randint(3, 200, (len(labels), 9), generator=torch.Generator().manual_seed(1))

    calls = []
    real = adapters_module.grouped_lora_forward

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(adapters_module, "grouped_lora_forward", spy)
    with torch.inference_mode():
        with engine.adapters.rows(labels, torch.device("cpu"), ids.shape[1]):
            ours = engine.model(input_ids=ids).logits
        assert calls, "the engine's own LoRA path did not run"
        expected = engine.adapters.peft(input_ids=ids, adapter_names=labels).logits
        alone = _each_row_alone(engine, ids, labels)
    assert torch.allclose(ours, expected, atol=1e-5), float((ours - expected).abs().max())
    for i, row in enumerate(alone):
        assert torch.allclose(ours[i], row, atol=1e-4), f"row {i}"
    # The adapters really differ from the base model, so a row on the wrong one would show.
    if any(p is not None for p in pattern):
        with torch.inference_mode():
            base = engine.adapters.peft(input_ids=ids, adapter_names=[BASE] * len(labels)).logits
        for i, p in enumerate(pattern):
            if p is not None:
                assert not torch.allclose(ours[i], base[i], atol=1e-3), f"row {i}"


def _each_row_alone(engine, ids: torch.Tensor, labels: list[str]) -> list[torch.Tensor]:
    """peft's logits for each row run by itself on its own adapter: the reference."""
    return [
        engine.adapters.peft(input_ids=ids[i : i + 1], adapter_names=[label]).logits[0]
        for i, label in enumerate(labels)
    ]


def _spy(monkeypatch, name: str) -> list[int]:
    calls: list[int] = []
    real = getattr(adapters_module, name)

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(adapters_module, name, spy)
    return calls


@pytest.mark.parametrize("positions", [1, 9])  # a decode step's shape and a prefill's
@pytest.mark.parametrize(
    "pattern",
    [
        [0, None, 2, 1, 0, 2],  # adapters of ranks 4, 6 and 8 on different layers, scattered
        [2, 2, 0, 0, 1, None],
    ],
)
def test_stacked_rows_match_grouped_and_peft(
    make_engine, adapter_refs, monkeypatch, pattern, positions
) -> None:
    engine = make_engine(start=False)
    for ref in adapter_refs:
        assert engine.adapters.ensure(ref)
    labels = [BASE if i is None else peft_label(adapter_refs[i].name) for i in pattern]
    ids = torch.randint(
        3, 200, (len(labels), positions), generator=torch.Generator().manual_seed(2)
    )
    stacked = _spy(monkeypatch, "stacked_lora_forward")
    with torch.inference_mode():
        engine.adapters.lora_path = "stacked"
        with engine.adapters.rows(labels, torch.device("cpu"), ids.shape[1]):
            ours = engine.model(input_ids=ids).logits
        assert stacked, "the stacked path did not run"
        engine.adapters.lora_path = "grouped"
        with engine.adapters.rows(labels, torch.device("cpu"), ids.shape[1]):
            grouped = engine.model(input_ids=ids).logits
        alone = _each_row_alone(engine, ids, labels)
    assert torch.allclose(ours, grouped, atol=1e-4), float((ours - grouped).abs().max())
    for i, row in enumerate(alone):
        assert torch.allclose(ours[i], row, atol=1e-4), f"row {i}"


def test_auto_stacks_decode_steps_of_several_adapters_only(
    make_engine, adapter_refs, monkeypatch
) -> None:
    engine = make_engine(start=False)
    for ref in adapter_refs:
        assert engine.adapters.ensure(ref)
    a, b = (peft_label(ref.name) for ref in adapter_refs[:2])
    stacked = _spy(monkeypatch, "stacked_lora_forward")
    cases = [([a, b, BASE], 1, True), ([a, a, BASE], 1, False), ([a, b, BASE], 5, False)]
    for labels, positions, expected in cases:
        stacked.clear()
        ids = torch.randint(3, 200, (len(labels), positions))
        with (
            torch.inference_mode(),
            engine.adapters.rows(labels, torch.device("cpu"), ids.shape[1]),
        ):
            engine.model(input_ids=ids)
        assert bool(stacked) == expected, (labels, positions)


def test_stacks_follow_loads_and_evictions(make_engine, adapter_refs) -> None:
    engine = make_engine(start=False, max_loaded_adapters=2)
    cache = engine.adapters
    labels = [peft_label(ref.name) for ref in adapter_refs]
    assert cache.ensure(adapter_refs[0]) and cache.ensure(adapter_refs[1])
    assert cache.slots == sorted(labels[:2]) and cache.stack_rank == 6
    assert cache.ensure(adapter_refs[2])  # evicts adapter 0
    assert cache.slots == sorted(labels[1:]) and cache.stack_rank == 8
    cache.forget(adapter_refs[1].name)
    cache.apply_pending_unloads()
    assert cache.slots == [labels[2]]
    # Adapter 2 targets q, v and up: only those layers have a stack, one slot wide.
    names = {
        name.rsplit(".", 1)[-1] for name, m in cache.base.named_modules() if m in cache._stacks
    }
    assert names == {"q_proj", "v_proj", "up_proj"}
    assert all(s.a.shape[1] == 8 for s in cache._stacks.values())
    # Rows of the remaining adapter and the base model still match peft after the changes.
    pattern = [labels[2], BASE, labels[2]]
    ids = torch.randint(3, 200, (3, 1), generator=torch.Generator().manual_seed(3))
    cache.lora_path = "stacked"
    with torch.inference_mode():
        with cache.rows(pattern, torch.device("cpu"), ids.shape[1]):
            ours = engine.model(input_ids=ids).logits
        expected = cache.peft(input_ids=ids, adapter_names=pattern).logits
    assert torch.allclose(ours, expected, atol=1e-5)


def test_stacked_rows_in_a_bf16_model_match_grouped(
    sharp_model_dir, adapter_refs, tmp_path
) -> None:
    """bf16 on CPU: fp32 adapters (`adapter_dtype`), the update cast to bf16 once per layer."""
    loaded = load_base_model(str(sharp_model_dir), tmp_path, "cpu", "bfloat16")
    cache = AdapterCache(loaded.model, 3, adapter_dtype(loaded.device, loaded.dtype))
    for ref in adapter_refs:
        assert cache.ensure(ref)
    labels = [peft_label(adapter_refs[i].name) for i in (0, 1, 2, 0)] + [BASE]
    ids = torch.randint(3, 200, (len(labels), 1), generator=torch.Generator().manual_seed(4))
    out = {}
    with torch.inference_mode():
        for path in ("stacked", "grouped"):
            cache.lora_path = path
            with cache.rows(labels, loaded.device, ids.shape[1]):
                out[path] = loaded.model(input_ids=ids).logits.float()
        base = cache.peft(input_ids=ids, adapter_names=[BASE] * len(labels)).logits.float()
    diff = (out["stacked"] - out["grouped"]).abs().max()
    # Within bf16 rounding, and far below what the adapters change.
    assert diff < 0.1 * (out["grouped"] - base)[:4].abs().max(), float(diff)


@pytest.mark.parametrize("pattern", [[0, 0, None], [0, None, 0]])  # slice, then index rows
def test_adapter_with_bias_on_b_matches_peft(
    make_engine, sharp_model_dir, tmp_path, pattern
) -> None:
    """lora_bias adapters: B's bias is part of the update (those layers get no stack)."""
    base = AutoModelForCausalLM.from_pretrained(sharp_model_dir)
    torch.manual_seed(7)
    config = LoraConfig(r=4, target_modules=["q_proj"], lora_bias=True, init_lora_weights=False)
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name and name.endswith("bias"):
                param.normal_(0, 0.5)
    model.save_pretrained(str(tmp_path / "biased"))
    engine = make_engine(start=False)
    ref = AdapterRef(name="ft:tiny:biased:job", path=tmp_path / "biased")
    assert engine.adapters.ensure(ref)
    assert not engine.adapters._stacks
    labels = [BASE if i is None else peft_label(ref.name) for i in pattern]
    ids = torch.randint(3, 200, (3, 5), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        with engine.adapters.rows(labels, torch.device("cpu"), ids.shape[1]):
            ours = engine.model(input_ids=ids).logits
        alone = _each_row_alone(engine, ids, labels)
    for i, row in enumerate(alone):
        assert torch.allclose(ours[i], row, atol=1e-4), f"row {i}"
