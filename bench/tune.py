"""Auto settings against a small grid: held-out accuracy of LoRA adapters on the shared sets.

For each data set and size: a balanced random sample of training sentences as chat examples
(user: instruction + sentence, assistant: the label), trained by the worker's trainer
(workers/training.py) once with every hyperparameter "auto" (app/finetune/auto_settings.py,
the worker's rule, with the model's real parameter count) and once per grid point (epochs x
learning rate, batch size as auto picks it); then greedy generation on held-out test
sentences, prompts rendered as the server renders them, an answer right when its first line
equals the label. `--train-check` also scores the auto adapter on its own training examples.

    .venv/bin/python -m bench.tune --sets trec4:24 --train-check --only-auto   # the goal
    .venv/bin/python -m bench.tune --sets sst2:24,trec4:24 --test 100         # a table

Data sets (`name[:size]`): sst2 (2 labels), trec4 (TREC questions of 4 coarse types routed
to four made-up team names, the issue's "Team X" case), banking8 (8 Banking77 intents).
Results are appended to --out as JSON lines as each run finishes, so a long grid that is
stopped keeps what it measured.
"""

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

from app.engine.loader import load_base_model
from app.engine.prompts import encode, render_chat
from app.settings import get_settings
from workers.training import (
    config_from_hyperparameters,
    parameter_count,
    resolve_hyperparameters,
    tokenize_chat,
    train_lora,
)

ROOT = Path(__file__).resolve().parent.parent

# ../shared/datasets beside the checkout (or beside the worktrees folder); --data overrides.
DATA = next(
    (
        p
        for p in (ROOT.parent / "shared" / "datasets", ROOT.parent.parent / "shared" / "datasets")
        if p.is_dir()
    ),
    ROOT.parent / "shared" / "datasets",
)
TEAMS = {
    "description": "Team Atlas",
    "entity": "Team Birch",
    "human": "Team Cedar",
    "location": "Team Delta",
}
BANKING8 = [
    "card_arrival",
    "lost_or_stolen_card",
    "exchange_rate",
    "top_up_failed",
    "cash_withdrawal_charge",
    "pin_blocked",
    "transfer_timing",
    "refund_not_showing_up",
]
SETS = {
    "sst2": (
        "sst2",
        "Classify the sentiment of this movie review as positive or negative.\nReview: ",
        {"positive": "positive", "negative": "negative"},
    ),
    "trec4": ("trec", "Route this question to the right team.\nQuestion: ", TEAMS),
    "banking8": (
        "banking77",
        "Name the intent of this banking customer message.\nMessage: ",
        {label: label for label in BANKING8},
    ),
}


OPTS: dict = {"data": DATA}


def rows_of(folder: str, split: str, labels: dict[str, str]) -> list[dict]:
    out = []
    for line in (OPTS["data"] / folder / f"{split}.jsonl").open():
        row = json.loads(line)
        if row["label"] in labels:
            out.append({"text": row["text"], "label": labels[row["label"]]})
    return out


def balanced(rows: list[dict], n: int, rng: random.Random) -> list[dict]:
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row)
    per = n // len(by_label)
    picked = [r for label in sorted(by_label) for r in rng.sample(by_label[label], per)]
    rng.shuffle(picked)
    return picked


def chat(instruction: str, row: dict, with_answer: bool) -> list[dict[str, str]]:
    messages = [{"role": "user", "content": instruction + row["text"]}]
    if with_answer:
        messages.append({"role": "assistant", "content": row["label"]})
    return messages


def progress(m) -> bool:
    if m.step % 24 == 0 or m.step == m.total_steps:
        print(f"  step {m.step}/{m.total_steps} loss {m.train_loss:.3f}", file=sys.stderr)
    return True


@torch.no_grad()
def accuracy(model, tokenizer, instruction: str, rows: list[dict], batch: int = 16) -> float:
    """Greedy answers, left-padded batches; right when the first line equals the label."""
    model.eval()
    longest = max(len(encode(tokenizer, r["label"])) for r in rows) + 2
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    correct = 0
    for start in range(0, len(rows), batch):
        part = rows[start : start + batch]
        prompts = [
            encode(tokenizer, render_chat(tokenizer, chat(instruction, r, False))) for r in part
        ]
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=longest,
            do_sample=False,
            pad_token_id=pad,
        )
        for row, seq in zip(part, out[:, width:], strict=True):
            text = tokenizer.decode(seq, skip_special_tokens=True).strip().split("\n")[0].strip()
            correct += text == row["label"]
    return correct / len(rows)


def run_one(set_name: str, n: int, train_rows, test_rows, requested: dict, args) -> dict:
    _, instruction, _ = SETS[set_name]
    settings = get_settings()
    loaded = load_base_model(args.model, settings.model_cache, "cpu")
    tok = loaded.tokenizer
    hp = resolve_hyperparameters(requested, len(train_rows), parameter_count(loaded.model))
    config = config_from_hyperparameters(hp, args.seed, 2048)
    examples = [tokenize_chat(tok, chat(instruction, r, True), 2048) for r in train_rows]
    started = time.perf_counter()
    result = train_lora(loaded.model, tok, examples, config, report=progress)
    seconds = time.perf_counter() - started
    record = {
        "set": set_name,
        "n": n,
        "label": "auto"
        if requested == {}
        else f"{hp['n_epochs']} ep x {config.learning_rate:g} (batch {hp['batch_size']})",
        "n_epochs": hp["n_epochs"],
        "batch_size": hp["batch_size"],
        "learning_rate": config.learning_rate,
        "steps": result.steps,
        "final_loss": round(result.final_train_loss, 4),
        "train_seconds": round(seconds, 1),
        "test_n": len(test_rows),
        "test_accuracy": accuracy(result.model, tok, instruction, test_rows),
    }
    if requested == {}:
        record["auto_reason"] = hp["auto_reason"]
    if args.train_check:
        record["train_accuracy"] = accuracy(result.model, tok, instruction, train_rows)
    return record


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="sst2:24,trec4:24", help="name:size, comma-separated")
    parser.add_argument("--test", type=int, default=100, help="held-out sentences per set")
    parser.add_argument("--epochs", default="3,10", help="grid epochs")
    parser.add_argument("--lrs", default="5e-4,2e-3", help="grid learning rates")
    parser.add_argument("--only-auto", action="store_true")
    parser.add_argument(
        "--previous-auto", action="store_true", help="also the rule before issue 16's"
    )
    parser.add_argument("--skip-auto", action="store_true", help="the grid points only")
    parser.add_argument("--train-check", action="store_true", help="auto: own-example accuracy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared datasets folder")
    parser.add_argument("--out", type=Path, default=Path("bench-tune.jsonl"))
    args = parser.parse_args()
    OPTS["data"] = args.data
    torch.set_num_threads(torch.get_num_threads())
    for item in args.sets.split(","):
        set_name, _, size = item.partition(":")
        n = int(size or 24)
        folder, _, labels = SETS[set_name]
        rng = random.Random(args.seed)
        train_rows = balanced(rows_of(folder, "train", labels), n, rng)
        test_rows = balanced(rows_of(folder, "test", labels), args.test, rng)
        grid = [] if args.skip_auto else [{}]
        if args.previous_auto:  # 10 epochs at 10 examples down to 3 at 100, batch n/10, 5e-4
            grid.append(
                {
                    "n_epochs": min(10, max(3, -(-100 // n))),
                    "batch_size": min(8, max(1, n // 10)),
                    "learning_rate_multiplier": 1.0,
                }
            )
        if not args.only_auto:
            grid += [
                {"n_epochs": int(e), "learning_rate_multiplier": float(lr) / 5e-4}
                for e in args.epochs.split(",")
                for lr in args.lrs.split(",")
            ]
        for requested in grid:
            record = run_one(set_name, len(train_rows), train_rows, test_rows, requested, args)
            print(json.dumps(record))
            with args.out.open("a") as fh:
                fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
