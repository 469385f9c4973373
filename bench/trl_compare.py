"""The worker's own LoRA loop against TRL's SFTTrainer, side by side on SST-2.

For the decision whether SFT (and DPO) keep workers/training.py or move to TRL's trainers
(docs/architecture.md). One process, one after the other, the default model
(SmolLM2-135M-Instruct, fp32), the same sentences and settings for both (1 epoch, batch 8,
lr 5e-4 decaying linearly to zero, no warm-up, no weight decay, gradient norm clipped at
1, LoRA r=8 alpha=16 dropout 0.05 on q/k/v/o, loss on the answer tokens only): so the same
number of optimiser steps. TRL's own defaults that would make the runs differ (bf16,
gradient checkpointing) are turned off. Prints for each: tokens/s (non-padding tokens per
second of training), the held-out accuracy on SST-2 test sentences (bench/train.py's
next-token comparison of "positive" vs "negative"), and resume exactness: a 2-epoch run on
`--resume-train` sentences, resumed from the end of epoch 1 in a fresh model (the worker's
ResumeState through a file; TRL's checkpoint folder with `resume_from_checkpoint`), against
the same run unbroken: are the final LoRA weights bit-identical, and the largest
difference. Then the ratios TRL / own.

TRL is not a dependency of the project: install it beside it for this measurement only,
e.g. `pip install --target /tmp/trl-site --no-deps trl==1.16.0 datasets==5.2.0 dill
multiprocess pandas pyarrow xxhash` and run with PYTHONPATH=/tmp/trl-site:

    PYTHONPATH=/tmp/trl-site:. .venv/bin/python -m bench.trl_compare --train 96 --test 100
    # from a git worktree: --data /work/shared/datasets/sst2
"""

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.train import (
    DATASET,
    OPTS,
    accuracy,
    bench_config,
    fresh_model,
    load_rows,
    messages,
    warm_up,
)
from workers.training import ResumeState, TrainConfig, lora_config, tokenize_chat, train_lora


def lora_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA tensors by a name both paths share (peft's, less the adapter name)."""
    return {
        name.replace(".default", ""): p.detach().clone()
        for name, p in model.named_parameters()
        if "lora_" in name
    }


def difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[bool, float]:
    assert a.keys() == b.keys(), "different LoRA parameters"
    same = all(torch.equal(a[k], b[k]) for k in a)
    return same, max(float((a[k] - b[k]).abs().max()) for k in a)


# --- the worker's own loop ------------------------------------------------------------------


def own_examples(tokenizer, rows: list[dict], config: TrainConfig) -> list:
    return [
        tokenize_chat(
            tokenizer,
            messages(r["text"]) + [{"role": "assistant", "content": r["label"]}],
            config.max_length,
        )
        for r in rows
    ]


def own_train(rows: list[dict], config: TrainConfig, **loop) -> tuple:
    loaded = fresh_model()
    result = train_lora(
        loaded.model, loaded.tokenizer, own_examples(loaded.tokenizer, rows, config), config, **loop
    )
    return result, loaded.tokenizer


def own_resume(rows: list[dict], config: TrainConfig, folder: Path) -> tuple[bool, float]:
    """Unbroken 2 epochs, then epoch 2 again in a fresh model from epoch 1's saved state."""
    states: dict[int, Path] = {}

    def save(state: ResumeState) -> None:
        states[state.epoch] = folder / f"own-{state.epoch}.pt"
        state.save(states[state.epoch])

    unbroken, _ = own_train(rows, config, on_checkpoint=save)
    resumed, _ = own_train(rows, config, resume=ResumeState.load(states[1]))
    return difference(lora_weights(unbroken.model), lora_weights(resumed.model))


# --- TRL ------------------------------------------------------------------------------------


def trl_trainer(rows: list[dict], config: TrainConfig, out: Path, save_steps: int | None):
    from datasets import Dataset
    from datasets.table import InMemoryTable
    from trl import SFTConfig, SFTTrainer

    loaded = fresh_model()
    # An explicit fingerprint: datasets 5.2 cannot hash a pyarrow 26 table to make one.
    data = Dataset(
        InMemoryTable.from_pylist(
            [
                {
                    "prompt": messages(r["text"]),
                    "completion": [{"role": "assistant", "content": r["label"]}],
                }
                for r in rows
            ]
        ),
        fingerprint=f"sst2-{len(rows)}",
    )
    args = SFTConfig(
        output_dir=str(out),
        num_train_epochs=config.n_epochs,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=config.seed,
        data_seed=config.seed,
        max_length=config.max_length,
        completion_only_loss=True,
        packing=False,
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=OPTS["device"] == "cpu",
        logging_steps=10_000,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    lora = lora_config(config)
    trainer = SFTTrainer(
        model=loaded.model,
        args=args,
        train_dataset=data,
        processing_class=loaded.tokenizer,
        peft_config=lora,
    )
    return trainer, loaded.tokenizer


def trl_train(rows: list[dict], config: TrainConfig, out: Path) -> tuple:
    trainer, tok = trl_trainer(rows, config, out, None)
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"]) * config.n_epochs
    started = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - started
    return trainer.model, tok, tokens, seconds, output.training_loss, trainer.state.global_step


def trl_resume(rows: list[dict], config: TrainConfig, folder: Path) -> tuple[bool, float]:
    """Unbroken 2 epochs saving a checkpoint after epoch 1, then a fresh trainer resumed
    from that checkpoint folder."""
    steps_per_epoch = -(-len(rows) // config.batch_size)
    unbroken, _ = trl_trainer(rows, config, folder / "trl-unbroken", steps_per_epoch)
    unbroken.train()
    resumed, _ = trl_trainer(rows, config, folder / "trl-resumed", None)
    resumed.train(
        resume_from_checkpoint=str(folder / "trl-unbroken" / f"checkpoint-{steps_per_epoch}")
    )
    return difference(lora_weights(unbroken.model), lora_weights(resumed.model))


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=96)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--resume-train", type=int, default=32, help="sentences, 2 epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-resume", action="store_true")
    parser.add_argument("--data", type=Path, default=DATASET, help="folder with sst2 jsonl")
    args = parser.parse_args()
    OPTS.update(data=args.data)
    config = bench_config(batch_size=8, seed=args.seed)
    train_rows = load_rows("train", args.train, args.seed)
    test_rows = load_rows("test", args.test, args.seed)
    print(
        f"SST-2: {len(train_rows)} train, {len(test_rows)} test sentences; "
        f"torch threads {torch.get_num_threads()}; {config}"
    )
    warm_up()
    folder = Path(tempfile.mkdtemp(prefix="trl-compare-"))

    if not args.skip_resume:  # first: the deciding measurement, if time runs short
        resume_rows = load_rows("train", args.resume_train, args.seed)
        two_epochs = replace(config, n_epochs=2)
        same, diff = own_resume(resume_rows, two_epochs, folder)
        print(f"own resume after epoch 1 of 2: bit-identical {same}, max |difference| {diff:.3g}")
        same, diff = trl_resume(resume_rows, two_epochs, folder)
        print(f"trl resume after epoch 1 of 2: bit-identical {same}, max |difference| {diff:.3g}")

    own, tok = own_train(train_rows, config)
    own_acc = accuracy(own.model, tok, test_rows)
    print(
        f"own: {own.steps} steps, {own.trained_tokens} tokens, {own.train_seconds:.1f} s, "
        f"{own.tokens_per_second:.1f} tokens/s, final loss {own.final_train_loss:.4f}, "
        f"accuracy {own_acc:.3f}"
    )
    model, tok, tokens, seconds, loss, steps = trl_train(train_rows, config, folder / "trl")
    trl_acc = accuracy(model, tok, test_rows)
    print(
        f"trl: {steps} steps, {tokens} tokens, {seconds:.1f} s, {tokens / seconds:.1f} tokens/s, "
        f"mean loss {loss:.4f}, accuracy {trl_acc:.3f}"
    )
    print(f"ratio trl/own tokens/s: {tokens / seconds / own.tokens_per_second:.2f}")
    print(f"difference trl - own accuracy: {trl_acc - own_acc:+.3f} on {len(test_rows)} sentences")


if __name__ == "__main__":
    main()
