"""What "auto" chooses: enough optimizer steps for small sets, a rate for the model's size
and LoRA shape, and the reason, reported."""

from app.finetune import auto_settings
from app.finetune.auto_settings import MAX_AUTO_EPOCHS, MIN_STEPS, resolve


def test_a_tiny_set_gets_the_step_floor():
    hp = resolve({}, 24, n_params=135_000_000)
    steps = hp["n_epochs"] * -(-24 // hp["batch_size"])
    assert hp["batch_size"] == 1 and hp["n_epochs"] == 10 and steps >= MIN_STEPS
    assert hp["auto"] == ["n_epochs", "batch_size", "learning_rate_multiplier"]
    assert "240 steps" in hp["auto_reason"] and f"at least {MIN_STEPS}" in hp["auto_reason"]
    assert abs(hp["learning_rate"] - 1e-3) < 1e-6


def test_the_epoch_cap_bounds_the_floor():
    # Batch 8 on 40 examples: 5 steps an epoch; the floor would need 48 epochs.
    hp = resolve({"batch_size": 8}, 40)
    assert hp["n_epochs"] == MAX_AUTO_EPOCHS and hp["auto"] == [
        "n_epochs",
        "learning_rate_multiplier",
    ]
    assert "the most auto allows" in hp["auto_reason"] and "batch size" not in hp["auto_reason"]


def test_large_sets_keep_a_few_epochs():
    hp = resolve({}, 5000)
    assert hp["batch_size"] == 8 and hp["n_epochs"] == 3


def test_learning_rate_follows_model_size_and_rank():
    base = auto_settings.auto_learning_rate(135_000_000, 8, 16)
    big = auto_settings.auto_learning_rate(135_000_000 * 16, 8, 16)
    wide = auto_settings.auto_learning_rate(135_000_000, 32, 64)
    loud = auto_settings.auto_learning_rate(135_000_000, 8, 64)  # alpha/r = 8
    assert abs(big - base / 4) < 1e-9 and abs(wide - base / 2) < 1e-9
    assert abs(loud - base / 4) < 1e-9
    assert auto_settings.auto_learning_rate(10, 1, 1) == auto_settings.MAX_AUTO_LR


def test_given_values_are_kept_and_a_retry_chooses_the_same():
    given = resolve({"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5}, 24)
    assert (given["n_epochs"], given["batch_size"], given["learning_rate"]) == (2, 4, 2.5e-4)
    assert given["auto"] == [] and "nothing chosen" in given["auto_reason"]
    first = resolve({"n_epochs": "auto", "batch_size": 2}, 24, n_params=135_000_000)
    again = resolve(first, 24, n_params=135_000_000)  # the row holds the resolved values
    assert again == first


def test_dpo_auto_adds_beta_and_a_gentler_rate():
    sft = resolve({}, 24, n_params=135_000_000)
    dpo = resolve({"beta": "auto"}, 24, n_params=135_000_000, method="dpo")
    assert dpo["beta"] == auto_settings.DPO_BETA and "beta" in dpo["auto"]
    assert abs(dpo["learning_rate"] - sft["learning_rate"] * auto_settings.DPO_LR_FACTOR) < 1e-9
    assert "for DPO" in dpo["auto_reason"] and "beta 0.1" in dpo["auto_reason"]
    assert resolve({"beta": 0.5}, 24, method="dpo")["beta"] == 0.5
