"""Peak memory of one training step of the worker's trainer, by job shape.

Each shape runs in a fresh process (its peak resident set, ru_maxrss, is that shape's
alone): the default model (SmolLM2-135M-Instruct) loaded as the worker loads it, then one
optimizer step of `workers.training` on `--rows` synthetic examples of `--tokens` tokens each
(batch_size = rows), with micro-batches of at most `--budget` token positions (0: the whole
batch in one forward, as before TRAIN_MICROBATCH_TOKENS). Prints the resident set after
loading and the peak, in GiB.

    .venv/bin/python -m bench.train_memory --rows 2 --tokens 512 --budget 0
    .venv/bin/python -m bench.train_memory --rows 3 --tokens 8192 --budget 8192
"""

import argparse
import resource
import time
from pathlib import Path

import torch

from app.engine.loader import load_base_model
from app.settings import get_settings
from workers.training import TokenizedExample, TrainConfig, train_lora


def rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--tokens", type=int, required=True)
    parser.add_argument("--budget", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = get_settings()
    loaded = load_base_model(settings.base_model, settings.model_cache, "cpu")
    loaded_gib = rss_gib()
    vocab = loaded.model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    examples = []
    for _ in range(args.rows):
        ids = torch.randint(10, vocab, (args.tokens,), generator=g).tolist()
        half = args.tokens // 2  # the second half is the "answer": it carries the loss
        examples.append(TokenizedExample(ids, [-100] * half + ids[half:]))
    config = TrainConfig(
        n_epochs=1,
        batch_size=args.rows,
        learning_rate=1e-4,
        max_length=args.tokens,
        microbatch_tokens=args.budget or None,
    )
    started = time.perf_counter()
    result = train_lora(loaded.model, loaded.tokenizer, examples, config)
    seconds = time.perf_counter() - started
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"rows={args.rows} tokens={args.tokens} budget={args.budget or 'none'}: "
        f"loaded {loaded_gib:.2f} GiB, peak {peak_gib:.2f} GiB, "
        f"step {seconds:.1f} s, loss {result.final_train_loss:.3f}"
    )


if __name__ == "__main__":
    main()
