"""Decode-step attention on CPU: PyTorch's SDPA against the engine's `decode_attention`
(app/engine/attention.py) and transformers' eager attention, on the real default model, in
process, side by side: the model's whole decode forward is timed (CPU time of this thread),
each implementation once per round, medians over the rounds. Shapes: 16 rows with and without
left padding (padding makes SDPA take another kernel), a longer cache, and one row.

    .venv/bin/python -m bench.attention --dtype bfloat16 --threads 1 --rounds 12
"""

import argparse
import os
import statistics
import time

import torch
from transformers import DynamicCache

from app.engine.attention import NAME
from app.engine.engine import prepare_for_serving
from app.engine.loader import load_base_model
from app.settings import get_settings

SHAPES = [(16, 64, False), (16, 64, True), (16, 200, True), (1, 64, False)]
IMPLEMENTATIONS = ("sdpa", NAME, "eager")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = get_settings()
    model = load_base_model(settings.base_model, settings.model_cache, "cpu", args.dtype).model
    prepare_for_serving(model)
    print(f"dtype={args.dtype} threads={args.threads} load={os.getloadavg()[0]:.2f}", flush=True)
    gen = torch.Generator().manual_seed(0)
    for rows, context, padded in SHAPES:
        ids = torch.randint(100, 20000, (rows, context), generator=gen)
        step = torch.randint(100, 20000, (rows, 1), generator=gen)
        mask = torch.ones(rows, context + 1, dtype=torch.long)
        if padded:
            mask[0, :3] = 0  # one row three tokens shorter, as prompts of different lengths
        caches, times = {}, {name: [] for name in IMPLEMENTATIONS}
        with torch.inference_mode():
            for name in IMPLEMENTATIONS:
                model.set_attn_implementation(name)
                caches[name] = DynamicCache()
                model(input_ids=ids, attention_mask=mask[:, :-1], past_key_values=caches[name])
            for _ in range(args.rounds + 2):  # the first two are warm-up
                for name in IMPLEMENTATIONS:
                    model.set_attn_implementation(name)
                    t0 = time.thread_time()
                    model(
                        input_ids=step,
                        attention_mask=mask,
                        past_key_values=caches[name],
                        logits_to_keep=1,
                    )
                    times[name].append(time.thread_time() - t0)
                    caches[name].crop(-1)
        ms = {name: 1000 * statistics.median(t[2:]) for name, t in times.items()}
        print(
            f"rows={rows} context={context} padded={padded}: "
            + ", ".join(f"{name} {v:.1f} ms" for name, v in ms.items())
            + f"; sdpa / {NAME} = {ms['sdpa'] / ms[NAME]:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
