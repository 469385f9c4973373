"""What "auto" means for a fine-tuning job's hyperparameters, and why (`auto_reason`).

Pure arithmetic on the data set's size, the base model's size and the LoRA shape, so the
API, the worker and the benchmarks agree. The rule is by optimizer steps, not only epochs: a
small set needs enough updates to fit (a 24-example set at 3-5 epochs gets ~70 steps and
answers like a guess), so epochs grow until training takes at least `MIN_STEPS` steps, up to
`MAX_AUTO_EPOCHS`. Tuned with bench/tune.py; see docs/benchmarks.md "Auto settings".
"""

import math
from dataclasses import dataclass
from typing import Any

BASE_LEARNING_RATE = 5e-4  # the LoRA learning rate at learning_rate_multiplier 1.0
AUTO_KEYS = ("n_epochs", "batch_size", "learning_rate_multiplier")

MIN_STEPS = 240  # optimizer steps a small set gets at least (capped by MAX_AUTO_EPOCHS)
MAX_AUTO_EPOCHS = 20
MIN_AUTO_EPOCHS = 3
EXAMPLES_PER_BATCH_ROW = 16  # auto batch size: about one row per 16 examples, 1 to MAX
MAX_AUTO_BATCH = 8

# Learning rate: 1e-3 suits a ~135M-parameter model at r=8, alpha=16 (measured, see the
# benchmarks). Larger models want smaller steps (scaled by sqrt(reference/params)); with
# Adam every LoRA entry moves by about the learning rate, so the update to a weight grows
# with sqrt(r) (r independent directions) and with alpha/r (peft's scaling): both divided out.
REFERENCE_LR = 1e-3
REFERENCE_PARAMS = 135e6
REFERENCE_RANK = 8
REFERENCE_SCALE = 2.0  # alpha / r
MIN_AUTO_LR, MAX_AUTO_LR = 2e-5, 2e-3
# DPO moves a model that already answers; a tenth of the SFT rate keeps it near the
# reference, as DPO recipes do. beta 0.1 is the DPO paper's usual value.
DPO_LR_FACTOR = 0.1
DPO_BETA = 0.1


def _auto(hp: dict[str, Any], key: str) -> bool:
    return hp.get(key) in (None, "auto")


@dataclass(frozen=True)
class StepPlan:
    n_epochs: int
    batch_size: int
    steps_per_epoch: int

    @property
    def total_steps(self) -> int:
        return self.n_epochs * self.steps_per_epoch


def auto_batch_size(n_examples: int) -> int:
    return int(min(MAX_AUTO_BATCH, max(1, n_examples // EXAMPLES_PER_BATCH_ROW)))


def auto_epochs(n_examples: int, batch_size: int) -> int:
    """Enough passes over tiny sets, and at least MIN_STEPS steps, at most MAX_AUTO_EPOCHS."""
    steps_per_epoch = math.ceil(max(1, n_examples) / batch_size)
    by_passes = min(10, max(MIN_AUTO_EPOCHS, math.ceil(100 / max(1, n_examples))))
    by_steps = math.ceil(MIN_STEPS / steps_per_epoch)
    return int(min(MAX_AUTO_EPOCHS, max(by_passes, by_steps)))


def auto_learning_rate(n_params: int | None, r: int, alpha: int) -> float:
    size = math.sqrt(REFERENCE_PARAMS / n_params) if n_params else 1.0
    rank = math.sqrt(REFERENCE_RANK / r)
    scale = REFERENCE_SCALE / (alpha / r)
    lr = REFERENCE_LR * size * rank * scale
    return float(min(MAX_AUTO_LR, max(MIN_AUTO_LR, lr)))


def _millions(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def resolve(
    requested: dict[str, Any],
    n_examples: int,
    *,
    n_params: int | None = None,
    method: str = "supervised",
) -> dict[str, Any]:
    """The job's hyperparameters with every "auto" (or missing) value chosen, plus
    `learning_rate` (absolute), `auto` (the keys chosen here) and `auto_reason`."""
    out = dict(requested)
    for key in requested.get("auto", ()):  # a retried attempt: choose again, the same way
        out[key] = "auto"
    out.setdefault("r", 8)
    out.setdefault("alpha", 2 * out["r"])
    out.setdefault("dropout", 0.05)
    keys = (*AUTO_KEYS, "beta") if method == "dpo" else AUTO_KEYS
    chosen = [key for key in keys if _auto(out, key)]
    reasons: list[str] = []
    if "batch_size" in chosen:
        out["batch_size"] = auto_batch_size(n_examples)
        reasons.append(
            f"batch size {out['batch_size']} (one row per {EXAMPLES_PER_BATCH_ROW} "
            f"examples, 1 to {MAX_AUTO_BATCH})"
        )
    steps_per_epoch = math.ceil(max(1, n_examples) / int(out["batch_size"]))
    if "n_epochs" in chosen:
        out["n_epochs"] = auto_epochs(n_examples, int(out["batch_size"]))
        total = out["n_epochs"] * steps_per_epoch
        if total >= MIN_STEPS and out["n_epochs"] > MIN_AUTO_EPOCHS:
            why = f"so that training takes at least {MIN_STEPS} optimizer steps"
        elif out["n_epochs"] == MAX_AUTO_EPOCHS:
            why = f"the most auto allows; {MIN_STEPS} steps would need more"
        else:
            why = "enough passes for this many examples"
        reasons.append(
            f"{out['n_epochs']} epochs of {steps_per_epoch} steps = {total} steps ({why})"
        )
    if "learning_rate_multiplier" in chosen:
        lr = auto_learning_rate(n_params, int(out["r"]), int(out["alpha"]))
        if method == "dpo":
            lr *= DPO_LR_FACTOR
        out["learning_rate_multiplier"] = round(lr / BASE_LEARNING_RATE, 4)
        size = f"a {_millions(n_params)}-parameter model" if n_params else "an unknown-size model"
        reasons.append(
            f"learning rate {lr:.2g} for {size} at LoRA r={out['r']}, alpha={out['alpha']} "
            f"({REFERENCE_LR:g} at {_millions(int(REFERENCE_PARAMS))}, r={REFERENCE_RANK}, "
            "alpha=2r; scaled by sqrt of the size and rank ratios"
            + (f"; x{DPO_LR_FACTOR:g} for DPO)" if method == "dpo" else ")")
        )
    if "beta" in chosen:
        out["beta"] = DPO_BETA
        reasons.append(f"beta {DPO_BETA:g} (the usual DPO value)")
    out["learning_rate"] = BASE_LEARNING_RATE * float(out["learning_rate_multiplier"])
    out["auto"] = chosen
    out["auto_reason"] = (
        f"{n_examples} training examples: " + "; ".join(reasons)
        if reasons
        else "every value was given; nothing chosen automatically"
    )
    return out
