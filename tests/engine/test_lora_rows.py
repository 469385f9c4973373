"""The engine's per-row LoRA path against peft's own `adapter_names=` path: same logits for
every row, whether an adapter's rows are contiguous (a slice) or scattered (an index)."""

import pytest
import torch

import app.engine.adapters as adapters_module
from app.engine.adapters import BASE, peft_label, plan_rows


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
        with engine.adapters.rows(labels, torch.device("cpu")):
            ours = engine.model(input_ids=ids).logits
        assert calls, "the engine's own LoRA path did not run"
        expected = engine.adapters.peft(input_ids=ids, adapter_names=labels).logits
        alone = [
            engine.adapters.peft(input_ids=ids[i : i + 1], adapter_names=[label]).logits[0]
            for i, label in enumerate(labels)
        ]
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
