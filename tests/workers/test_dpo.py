"""DPO on the tiny model, in process: the loss against a plain reference computation, the
reference model, and that training moves the policy towards the preferred answers."""

import math
from pathlib import Path

import pytest
import torch

from app.engine.loader import load_base_model
from tests.files.data import preference_rows
from workers.dpo import DpoObjective, tokenize_pair
from workers.training import IGNORE, TrainConfig, train_objective, wrap_lora


@pytest.fixture
def loaded(tiny_model_dir: Path, tmp_path: Path):
    return load_base_model(str(tiny_model_dir), tmp_path, "cpu")


def _pairs(loaded, n: int = 8) -> list:
    examples = [
        {
            "messages": row["input"]["messages"],
            "preferred": row["preferred_output"][0]["content"],
            "non_preferred": row["non_preferred_output"][0]["content"],
        }
        for row in preference_rows(n)
    ]
    return [tokenize_pair(loaded.tokenizer, e, 256) for e in examples]


def _plain_logp(model, example) -> float:
    """Summed log-probability of the labelled tokens: one unpadded forward, full logits."""
    ids = torch.tensor([example.input_ids])
    logits = model(input_ids=ids).logits[0, :-1].float()
    logps = torch.log_softmax(logits, dim=-1)
    return sum(
        float(logps[pos, label]) for pos, label in enumerate(example.labels[1:]) if label != IGNORE
    )


def _objective(loaded, pairs, beta: float = 0.5) -> DpoObjective:
    return DpoObjective(
        pairs,
        pairs[:2],
        beta=beta,
        batch_size=4,
        pad_id=loaded.tokenizer.pad_token_id or 0,
        device=torch.device("cpu"),
    )


def test_only_the_final_answer_carries_loss(loaded):
    pair = _pairs(loaded, 1)[0]
    tok = loaded.tokenizer
    chosen = [
        t for t, lb in zip(pair.chosen.input_ids, pair.chosen.labels, strict=True) if lb != IGNORE
    ]
    rejected = [
        t
        for t, lb in zip(pair.rejected.input_ids, pair.rejected.labels, strict=True)
        if lb != IGNORE
    ]
    assert tok.decode(chosen).startswith("Paris") and not tok.decode(rejected).startswith("Paris")
    # The same prompt tokens on both sides.
    n = pair.chosen.labels.index(next(lb for lb in pair.chosen.labels if lb != IGNORE))
    assert pair.chosen.input_ids[:n] == pair.rejected.input_ids[:n]


def test_loss_and_rewards_match_a_plain_computation(loaded):
    pairs = _pairs(loaded)
    config = TrainConfig(n_epochs=1, batch_size=4, learning_rate=1e-3, r=4, dropout=0.0)
    model = wrap_lora(loaded.model, config)
    objective = _objective(loaded, pairs, beta=0.5)
    objective.prepare(model)
    # A fresh adapter adds nothing: the reference is the base model with the adapter off.
    with torch.no_grad(), model.disable_adapter():
        base = [(_plain_logp(model, p.chosen), _plain_logp(model, p.rejected)) for p in pairs]
    assert torch.allclose(objective.ref_train, torch.tensor(base), atol=1e-4)
    loss, _, extra = objective.step_loss(model, [0, 1, 2], [0, 1, 2])
    assert abs(float(loss) - math.log(2)) < 1e-5  # policy == reference: -log sigmoid(0)

    # Move the policy away from the reference, then compare with the formula by hand.
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    indices = [5, 0, 3]
    loss, tokens, extra = objective.step_loss(model, indices, indices)
    expected, margins, wins = 0.0, [], 0
    with torch.no_grad():
        for i in indices:
            pc, pr = _plain_logp(model, pairs[i].chosen), _plain_logp(model, pairs[i].rejected)
            rc, rr = base[i]
            chosen, rejected = 0.5 * (pc - rc), 0.5 * (pr - rr)
            expected += -math.log(1 / (1 + math.exp(-(chosen - rejected)))) / len(indices)
            margins.append(chosen - rejected)
            wins += chosen > rejected
    assert abs(float(loss) - expected) < 1e-4 and abs(float(loss) - math.log(2)) > 1e-3
    assert abs(float(extra["reward_margin"]) - sum(margins) / 3) < 1e-4
    assert abs(float(extra["reward_accuracy"]) - wins / 3) < 1e-6
    assert tokens == sum(
        len(pairs[i].chosen.input_ids) + len(pairs[i].rejected.input_ids) for i in indices
    )
    loss.backward()  # the loss reaches the adapter
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0
        for n, p in model.named_parameters()
        if "lora_" in n
    )


def test_training_prefers_the_preferred_answers(loaded):
    pairs = _pairs(loaded, 12)
    config = TrainConfig(n_epochs=10, batch_size=6, learning_rate=5e-3, r=8, dropout=0.0)
    objective = _objective(loaded, pairs, beta=0.5)
    seen = []
    result = train_objective(loaded.model, objective, config, report=seen.append, log_every=1)
    assert abs(seen[0].train_loss - math.log(2)) < 0.05  # the first step starts from log 2
    assert seen[-1].train_loss < seen[0].train_loss
    assert {"reward_accuracy", "reward_margin"} <= set(seen[-1].extra)
    assert seen[-1].extra["reward_margin"] > 0
    with torch.no_grad():
        won = sum(
            _plain_logp(result.model, p.chosen) - objective.ref_train[i, 0].item()
            > _plain_logp(result.model, p.rejected) - objective.ref_train[i, 1].item()
            for i, p in enumerate(pairs)
        )
    assert won >= 9  # of 12


def test_micro_batches_give_the_full_batch_step(tiny_model_dir: Path, tmp_path: Path):
    """One DPO step over 6 pairs in one forward, and in micro-batches of pairs under a token
    budget: the same loss, reward metrics and LoRA weights."""
    runs = {}
    for budget in (None, 150):
        loaded = load_base_model(str(tiny_model_dir), tmp_path, "cpu")
        pairs = _pairs(loaded, 6)
        config = TrainConfig(
            n_epochs=1, batch_size=6, learning_rate=1e-2, r=4, dropout=0.0, microbatch_tokens=budget
        )
        objective = DpoObjective(
            pairs,
            [],
            beta=0.5,
            batch_size=6,
            pad_id=loaded.tokenizer.pad_token_id or 0,
            device=torch.device("cpu"),
            microbatch_tokens=budget,
        )
        result = train_objective(loaded.model, objective, config, log_every=1)
        params = result.model.named_parameters()
        weights = {n: p.detach().clone() for n, p in params if "lora_" in n}
        runs[budget] = (result, weights, objective)
    (full, full_w, _), (micro, micro_w, objective) = runs[None], runs[150]
    widest = max(objective.lengths())
    assert 2 * widest <= 150 < 2 * 6 * widest  # every pair fits, the batch does not
    assert abs(full.final_train_loss - micro.final_train_loss) < 1e-5
    for key in ("reward_accuracy", "reward_margin", "chosen_reward"):
        assert abs(full.history[0].extra[key] - micro.history[0].extra[key]) < 1e-5, key
    assert any(float(w.abs().sum()) > 0 for n, w in full_w.items() if "lora_B" in n)
    for name in full_w:
        assert torch.allclose(full_w[name], micro_w[name], atol=1e-6, rtol=1e-5), name
