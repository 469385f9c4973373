"""The automatic validation hold-out: a seeded 10% of the training examples, only for sets
big enough to spare them (tiny sets are never shrunk)."""

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

HOLDOUT_FRACTION = 0.1
MIN_EXAMPLES_FOR_HOLDOUT = 50


@dataclass(frozen=True)
class Split:
    train: list[Any]
    valid: list[Any]
    source: str  # "file" | "holdout" | "none"
    note: str  # one sentence for the job's events and the manifest


def split_validation(train: Sequence[Any], valid_file: Sequence[Any], seed: int) -> Split:
    """The validation examples the job uses: the validation file's when given; else 10% of
    the training examples (chosen by the job's seed) when there are at least 50; else none."""
    if valid_file:
        return Split(
            list(train),
            list(valid_file),
            "file",
            f"{len(valid_file)} validation examples from the validation file",
        )
    if len(train) < MIN_EXAMPLES_FOR_HOLDOUT:
        return Split(
            list(train),
            [],
            "none",
            f"No validation: {len(train)} training examples is under {MIN_EXAMPLES_FOR_HOLDOUT}, "
            "too few to hold any out; the last epoch is the model",
        )
    n_valid = max(1, math.floor(len(train) * HOLDOUT_FRACTION))
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_valid])
    return Split(
        [e for i, e in enumerate(train) if i not in held],
        [e for i, e in enumerate(train) if i in held],
        "holdout",
        f"Held out {n_valid} of {len(train)} training examples ({HOLDOUT_FRACTION:.0%}, chosen "
        "by the job's seed) for validation; give a validation_file to train on all of them",
    )
