"""LoRA rows in one forward: the per-group path against the stacked path (app/engine/adapters.py),
on the real base model, in process, one torch thread.

Three random rank-16 adapters on q/k/v/o (as bench/workload.py makes them) are loaded into the
engine's AdapterCache (--loaded 8: five more loaded, not in the batches, as the default
max_loaded_adapters allows); the model's forward is timed for 16 rows of base only, of one
adapter, and of base + 3 adapters round robin (as bench/serve.py's clients mix them), at a
decode shape (one new token per row on a 64-token KV cache) and a prefill shape (64 tokens per
row; --context sets both). Each round times every case once, so the ratios are side by side; medians
of CPU time (thread time, so other processes on a shared machine do not count).

    .venv/bin/python -m bench.lora_paths --dtypes bfloat16,float32 --rounds 30 --prefill-rounds 3
    .venv/bin/python -m bench.lora_paths --loaded 8 --prefill-rounds 0
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import DynamicCache

from app.engine.adapters import (
    BASE,
    AdapterCache,
    AdapterRef,
    adapter_dtype,
    peft_label,
)
from app.engine.engine import prepare_for_serving
from app.engine.loader import load_base_model, resolve_source
from app.settings import get_settings

N_ADAPTERS = 3
ROWS = 16


def write_adapters(folder: Path, source: str, count: int = N_ADAPTERS) -> list[AdapterRef]:
    """bench/workload.py's adapters (rank 16 on q/k/v/o, random non-zero B), without a registry."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    refs = []
    for i in range(count):
        base = AutoModelForCausalLM.from_pretrained(source)
        config = LoraConfig(
            r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
        )
        torch.manual_seed(10 + i)
        model = get_peft_model(base, config)
        generator = torch.Generator().manual_seed(10 + i)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.01)
        model.save_pretrained(str(folder / f"a{i}"))
        refs.append(AdapterRef(name=f"bench{i}", path=folder / f"a{i}"))
    return refs


def cpu_ms(fn) -> float:
    t0 = time.thread_time()
    fn()
    return 1000 * (time.thread_time() - t0)


def run(dtype: str, refs: list[AdapterRef], rounds: int, prefill_rounds: int, context: int) -> None:
    settings = get_settings()
    loaded = load_base_model(settings.base_model, settings.model_cache, "cpu", dtype)
    model, device = loaded.model, loaded.device
    # What the engine does to the model: without the contiguous output-layer input, a bf16
    # prefill's output layer alone takes seconds once peft has frozen the weights.
    prepare_for_serving(model)
    # Every adapter stays loaded: the stacks hold them all, the batches use the first three.
    cache = AdapterCache(model, len(refs), adapter_dtype(device, loaded.dtype))
    for ref in refs:
        assert cache.ensure(ref)
    labels = [peft_label(r.name) for r in refs[:N_ADAPTERS]]
    patterns = {
        "base": [BASE] * ROWS,
        "one": [labels[0]] * ROWS,
        "mixed": [([BASE, *labels])[i % (N_ADAPTERS + 1)] for i in range(ROWS)],
    }
    ids = torch.randint(100, 20000, (ROWS, context), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        kv = DynamicCache()
        model(input_ids=ids, past_key_values=kv, use_cache=True)
    step = torch.randint(100, 20000, (ROWS, 1), generator=torch.Generator().manual_seed(1))

    def decode(pattern: list[str]) -> torch.Tensor:
        with torch.inference_mode(), cache.rows(pattern, device, step.shape[1]):
            out = model(input_ids=step, past_key_values=kv, use_cache=True, logits_to_keep=1)
        kv.crop(-1)  # back to the prompt's cache for the next step
        return out.logits

    def prefill(pattern: list[str]) -> torch.Tensor:
        with torch.inference_mode(), cache.rows(pattern, device, ids.shape[1]):
            return model(input_ids=ids, use_cache=False, logits_to_keep=1).logits

    paths = ["grouped", "stacked"]
    cases = [
        (p, path) for p in patterns for path in paths if not (p == "base" and path != "grouped")
    ]
    # The paths agree before anything is timed.
    for shape in (decode, prefill):
        for name, pattern in patterns.items():
            cache.lora_path = "grouped"
            want = shape(pattern).float()
            cache.lora_path = "stacked"
            got = shape(pattern).float()
            err = float((want - got).abs().max())
            assert err < (0.5 if dtype == "bfloat16" else 1e-3), (shape.__name__, name, err)
    for shape, n in ((decode, rounds), (prefill, prefill_rounds)):
        if n == 0:
            continue
        times: dict[tuple[str, str], list[float]] = {c: [] for c in cases}
        for case in cases * 2:  # warm-up
            cache.lora_path = case[1]  # type: ignore[assignment]
            shape(patterns[case[0]])
        for _ in range(n):
            for case in cases:
                cache.lora_path = case[1]  # type: ignore[assignment]
                times[case].append(cpu_ms(lambda f=shape, c=case: f(patterns[c[0]])))
        base = statistics.median(times[("base", "grouped")])
        for (pattern, path), ms in times.items():
            med = statistics.median(ms)
            row = {"dtype": dtype, "shape": shape.__name__, "rows": ROWS, "context": context}
            row |= {"loaded": len(refs), "pattern": pattern}
            row |= {"path": path, "cpu_ms": round(med, 2), "base_over_this": round(base / med, 3)}
            print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--rounds", type=int, default=20, help="decode rounds")
    parser.add_argument("--prefill-rounds", type=int, default=4)
    parser.add_argument("--context", type=int, default=64, help="prompt tokens per row")
    parser.add_argument(
        "--loaded", type=int, default=N_ADAPTERS, help="adapters loaded (batches use 3)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = get_settings()
    print(f"threads=1 cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        source = resolve_source(settings.base_model, settings.model_cache)
        refs = write_adapters(Path(tmp), source, max(args.loaded, N_ADAPTERS))
        for dtype in args.dtypes.split(","):
            run(dtype, refs, args.rounds, args.prefill_rounds, args.context)


if __name__ == "__main__":
    main()
