"""The trainer on the tiny model, in process: what carries loss, batching, reproducibility."""

import random
from pathlib import Path

import pytest
import torch

from app.engine.loader import load_base_model
from app.engine.prompts import encode, render_chat
from tests.files.data import chat_rows
from workers.training import (
    IGNORE,
    TrainConfig,
    TrainingStopped,
    length_grouped_batches,
    parameter_count,
    resolve_hyperparameters,
    tokenize_chat,
    train_lora,
)


@pytest.fixture
def loaded(tiny_model_dir: Path, tmp_path: Path):  # noqa: ANN201
    return load_base_model(str(tiny_model_dir), tmp_path, "cpu")


def test_prompt_tokens_match_serving_and_only_answers_carry_loss(loaded):
    tok = loaded.tokenizer
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello."},
        {"role": "assistant", "content": "hello", "weight": 0},
        {"role": "user", "content": "Say goodbye."},
        {"role": "assistant", "content": "goodbye"},
    ]
    ex = tokenize_chat(tok, messages, 256)
    # The prompt before the trained turn is exactly what the server would send the model.
    stripped = [{"role": m["role"], "content": m["content"]} for m in messages[:4]]
    served = encode(tok, render_chat(tok, stripped))
    assert ex.input_ids[: len(served)] == served
    assert all(label == IGNORE for label in ex.labels[: len(served)])  # weight-0 turn too
    answer = ex.input_ids[len(served) :]
    assert ex.labels[len(served) :] == answer
    assert tok.decode(answer).startswith("goodbye<|im_end|>")


def test_truncated_to_the_window(loaded):
    ex = tokenize_chat(loaded.tokenizer, chat_rows(1)[0]["messages"], 10)
    assert len(ex.input_ids) == len(ex.labels) == 10


def test_length_grouped_batches_cover_everything_with_less_padding():
    rng = random.Random(0)
    lengths = [rng.randint(5, 200) for _ in range(256)]
    batches = length_grouped_batches(lengths, 8, random.Random(1))
    assert sorted(i for b in batches for i in b) == list(range(256))

    def padding(bs: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in bs)

    order = list(range(256))
    random.Random(1).shuffle(order)
    plain = [order[i : i + 8] for i in range(0, 256, 8)]
    assert padding(batches) < padding(plain) / 3


def _train(loaded_factory, seed: int, **kw) -> dict[str, torch.Tensor]:  # noqa: ANN001
    loaded = loaded_factory()
    exs = [tokenize_chat(loaded.tokenizer, r["messages"], 256) for r in chat_rows(12)]
    config = TrainConfig(n_epochs=2, batch_size=4, learning_rate=1e-3, r=4, seed=seed)
    result = train_lora(loaded.model, loaded.tokenizer, exs, config, **kw)
    assert result.steps == 6 and result.trained_tokens > 0
    return {k: v.clone() for k, v in result.model.state_dict().items() if "lora_" in k}


def test_same_seed_same_weights_other_seed_differs(tiny_model_dir: Path, tmp_path: Path):
    def factory():  # noqa: ANN202
        return load_base_model(str(tiny_model_dir), tmp_path, "cpu")

    a, b, c = _train(factory, 5), _train(factory, 5), _train(factory, 6)
    assert a.keys() == b.keys() and a
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_reports_metrics_and_stops_when_told(loaded):
    exs = [tokenize_chat(loaded.tokenizer, r["messages"], 256) for r in chat_rows(12)]
    config = TrainConfig(n_epochs=3, batch_size=2, learning_rate=1e-3, r=4)
    seen = []
    calls = {"n": 0}

    def keep_going() -> bool:
        calls["n"] += 1
        return calls["n"] <= 4

    with pytest.raises(TrainingStopped) as stop:
        train_lora(
            loaded.model,
            loaded.tokenizer,
            exs,
            config,
            valid=exs[:2],
            report=seen.append,
            should_continue=keep_going,
            log_every=1,
        )
    assert stop.value.step == 4
    assert [m.step for m in seen] == [1, 2, 3, 4]
    assert all(m.valid_loss is not None and m.total_steps == 18 for m in seen)
    assert seen[-1].eta_seconds >= 0 and seen[-1].tokens_per_second > 0


def test_unknown_target_module_is_a_clear_error(loaded):
    exs = [tokenize_chat(loaded.tokenizer, r["messages"], 256) for r in chat_rows(2)]
    config = TrainConfig(n_epochs=1, batch_size=2, learning_rate=1e-3, target_modules=("nope",))
    with pytest.raises(ValueError, match="nope"):
        train_lora(loaded.model, loaded.tokenizer, exs, config)


def test_auto_hyperparameters_suit_the_data_size(loaded):
    n_params = parameter_count(loaded.model)
    tiny = resolve_hyperparameters({"n_epochs": "auto", "batch_size": "auto"}, 10, n_params)
    assert tiny["n_epochs"] == 20 and tiny["batch_size"] == 1  # 200 steps: the epoch cap
    assert tiny["r"] == 8 and tiny["alpha"] == 16 and tiny["target_modules"]
    assert tiny["learning_rate"] == 5e-4 * tiny["learning_rate_multiplier"]
    big = resolve_hyperparameters({"n_epochs": 2}, 5000)
    assert big["n_epochs"] == 2 and big["batch_size"] == 8


def test_epoch_ends_give_each_earlier_epochs_weights(loaded):
    exs = [tokenize_chat(loaded.tokenizer, r["messages"], 256) for r in chat_rows(12)]
    config = TrainConfig(n_epochs=3, batch_size=4, learning_rate=1e-3, r=4)
    ends = []

    def on_epoch_end(epoch, step, model, last) -> None:  # noqa: ANN001
        weights = {k: v.clone() for k, v in model.state_dict().items() if "lora_B" in k}
        ends.append((epoch, step, last.step, weights))

    result = train_lora(
        loaded.model, loaded.tokenizer, exs, config, log_every=1, on_epoch_end=on_epoch_end
    )
    # Epochs 1 and 2 (3 steps each); the last epoch's weights are the result itself.
    assert [(e, s, logged) for e, s, logged, _ in ends] == [(1, 3, 3), (2, 6, 6)]
    final = {k: v for k, v in result.model.state_dict().items() if "lora_B" in k}
    first, second = ends[0][3], ends[1][3]
    assert not all(torch.equal(first[k], second[k]) for k in first)  # a snapshot per epoch
    assert not all(torch.equal(second[k], final[k]) for k in final)
