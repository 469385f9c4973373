"""One LoRA layer's update against the base layer it adjusts, by hidden size, in process.

The stacked decode path's update (app/engine/adapters.py: `stacked_lora_forward`) for 16 rows
and 3 rank-16 adapters, as a bf16 CPU engine runs it (fp32 adapter weights, the input cast up
and the update cast down), against the bf16 base linear layer (hidden x hidden) on the same
rows. The base layer's cost grows as hidden^2 and the update's as hidden x rank, plus a fixed
cost per kernel that dominates at small sizes: this is what the LoRA overhead of a mixed batch
comes to on a model of each size.

    .venv/bin/python -m bench.lora_layer --threads 2 --hidden 576,2048,4096
"""

import argparse
import time
from collections.abc import Callable

import torch

from app.engine.adapters import add_update

ROWS, ADAPTERS, RANK = 16, 3, 16


def micros(fn: Callable[[], object], n: int) -> float:
    for _ in range(n // 10):  # warm-up
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hidden", default="576,2048,4096")
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads={args.threads} rows={ROWS} adapters={ADAPTERS} rank={RANK}", flush=True)
    for hidden in (int(h) for h in args.hidden.split(",")):
        base, lora = measure(hidden, args.calls)
        print(
            f"hidden {hidden}: base linear {base:.1f} us, LoRA update {lora:.1f} us, "
            f"LoRA / base {lora / base:.2f}",
            flush=True,
        )


def measure(hidden: int, calls: int) -> tuple[float, float]:
    """Microseconds per call: the base layer, the stacked LoRA update."""
    cols = ADAPTERS * RANK
    x = torch.randn(ROWS, hidden).bfloat16()
    weight = torch.randn(hidden, hidden).bfloat16()
    a, b = torch.randn(hidden, cols), torch.randn(cols, hidden)
    mask = torch.ones(ROWS, cols)
    out = torch.randn(ROWS, hidden).bfloat16()

    def update() -> None:  # `stacked_lora_forward`'s work after the base layer
        add_update(out, torch.mm(x.float(), a).mul_(mask), b)

    return micros(lambda: torch.nn.functional.linear(x, weight), calls), micros(update, calls)


if __name__ == "__main__":
    main()
