"""Decode-step cost of the built-in engine, in process: rows x dtype, and how much of each
step is the model's forward against the scheduler's own host work.

For each row count, `rows` chat requests (long answers, greedy, fixed max_tokens) go to one
engine at once; the wall time of the decode phase is split into time inside the model's
forward (timed around `model.forward`) and the rest (the scheduler's per-step work:
building inputs, cache bookkeeping, sampling, stop checks, streaming). Prefill is excluded.

    .venv/bin/python -m bench.steps --rows 1,16 --dtypes float32,bfloat16 --max-tokens 48
    .venv/bin/python -m bench.steps --rows 1,16 --profile /tmp/steps.prof   # cProfile

--adapters 3 also runs the rows as base + 3 random LoRA adapters round robin (bench/serve.py's
adapters and mix), once per --lora-paths value (app/engine/adapters.py's `lora_path`), each
round right after a base-only one so their ratio is side by side:

    .venv/bin/python -m bench.steps --rows 16 --adapters 3 --lora-paths grouped,auto --repeat 3
"""

import argparse
import asyncio
import cProfile
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import torch

from app.engine.adapters import AdapterRef
from app.engine.engine import Engine, EngineConfig
from app.engine.loader import load_base_model, resolve_source
from app.engine.prompts import encode, render_chat
from app.engine.sampling import SamplingParams
from app.engine.scheduler import Scheduler
from app.settings import get_settings
from bench.lora_paths import write_adapters
from bench.workload import LONG_QUESTIONS


class ForwardTimer:
    """Wraps model.forward: CPU seconds the scheduler thread spent inside it. CPU time, not
    wall time, so other processes on a shared machine do not count (with one torch thread,
    the forward's compute runs on the scheduler thread itself)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._forward = model.forward
        model.forward = self._timed  # type: ignore[method-assign]

    def _timed(self, *args, **kwargs):
        t0 = time.thread_time()
        try:
            return self._forward(*args, **kwargs)
        finally:
            self.seconds += time.thread_time() - t0
            self.calls += 1


def thread_cpu(engine: Engine) -> float:
    """CPU seconds the engine's scheduler thread has used."""
    assert engine._thread is not None and engine._thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(engine._thread.ident))


async def one_round(
    engine: Engine, prompts: list[list[int]], max_tokens: int, adapters: list[AdapterRef | None]
) -> int:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    handles = [engine.submit(ids, params, adapters[i]) for i, ids in enumerate(prompts)]
    done = await asyncio.gather(*(h.result() for h in handles))
    return sum(f.completion_tokens for f in done)


def sleeps() -> int:
    """Voluntary context switches of the whole process so far. At more than one torch
    thread, about two per parallel op (~480 per single-row step of the default model) means
    libgomp has stopped spin-waiting: more OpenMP workers than CPUs, as when two threads have
    run multi-threaded ops (two engines in one process); see bench/single.py."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw


def measure(
    engine: Engine,
    timer: ForwardTimer,
    rows: int,
    max_tokens: int,
    mix: tuple[AdapterRef | None, ...] = (None,),
) -> dict:
    """`mix`: the adapters of rows 0, 1, ... round robin (None: the base model)."""
    adapters = [mix[i % len(mix)] for i in range(rows)]
    tok = engine.tokenizer
    prompts = [
        encode(tok, render_chat(tok, [{"role": "user", "content": q}]))
        for q in (LONG_QUESTIONS * rows)[:rows]
    ]
    asyncio.run(one_round(engine, prompts, 2, adapters))  # warm-up, and the prefix cache's header
    # Prefill alone (max_tokens=1), to subtract it from the full run.
    stats = engine.stats
    f0, s0, c0, t0 = stats.forwards, timer.seconds, thread_cpu(engine), time.perf_counter()
    asyncio.run(one_round(engine, prompts, 1, adapters))
    prefill_wall, prefill_fwd = time.perf_counter() - t0, timer.seconds - s0
    prefill_cpu = thread_cpu(engine) - c0
    f1, s1, c1, t1 = stats.forwards, timer.seconds, thread_cpu(engine), time.perf_counter()
    n1 = sleeps()
    tokens = asyncio.run(one_round(engine, prompts, max_tokens, adapters))
    wall = time.perf_counter() - t1
    switches = sleeps() - n1
    cpu = thread_cpu(engine) - c1
    steps = max(1, (stats.forwards - f1) - (f1 - f0))
    decode_cpu = cpu - prefill_cpu
    decode_fwd = (timer.seconds - s1) - prefill_fwd
    return {
        "rows": rows,
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1),
        "tokens_per_cpu_s": round(tokens / cpu, 1),
        "decode_steps": steps,
        "wall_ms_per_step": round(1000 * (wall - prefill_wall) / steps, 2),
        "cpu_ms_per_step": round(1000 * decode_cpu / steps, 2),
        "forward_cpu_ms_per_step": round(1000 * decode_fwd / steps, 2),
        "host_cpu_ms_per_step": round(1000 * (decode_cpu - decode_fwd) / steps, 2),
        # Prefill's share left in: a few switches next to hundreds when throttled.
        "switches_per_step": round(switches / steps, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="1,16")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (CPU time is exact at 1)"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the forward")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the scheduler thread")
    parser.add_argument("--adapters", type=int, default=0, help="also base + N adapters mixed")
    parser.add_argument("--lora-paths", default="auto", help="AdapterCache.lora_path values")
    args = parser.parse_args()
    settings = get_settings()
    torch.set_num_threads(args.threads)
    print(
        f"threads={torch.get_num_threads()} cpus={os.cpu_count()} "
        f"load={os.getloadavg()[0]:.2f} max_tokens={args.max_tokens}",
        flush=True,
    )
    folder = tempfile.TemporaryDirectory()
    source = resolve_source(settings.base_model, settings.model_cache)
    refs = write_adapters(Path(folder.name), source, args.adapters) if args.adapters else []
    for dtype in args.dtypes.split(","):
        loaded = load_base_model(settings.base_model, settings.model_cache, "cpu", dtype)
        engine = Engine(loaded, EngineConfig(max_batch_size=64, batch_wait_ms=50))
        if args.compile:
            engine.model.forward = torch.compile(engine.model.forward, dynamic=True)
        timer = ForwardTimer(engine.model)
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            scheduler_run = Scheduler.run

            def profiled(self: Scheduler, _run=scheduler_run, _p=profiler) -> None:
                _p.runcall(_run, self)

            Scheduler.run = profiled  # type: ignore[method-assign]
        for ref in refs:  # loaded before any round, so base-only rounds run the LoRA hooks too
            assert engine.adapters.ensure(ref)
        engine.start()
        try:
            for _ in range(args.repeat):
                for rows in (int(r) for r in args.rows.split(",")):
                    out = measure(engine, timer, rows, args.max_tokens)
                    print(json.dumps({"dtype": dtype, **out}), flush=True)
                    if not refs:
                        continue
                    for path in args.lora_paths.split(","):
                        engine.adapters.lora_path = path  # type: ignore[assignment]
                        out = measure(engine, timer, rows, args.max_tokens, (None, *refs))
                        mixed = {"dtype": dtype, "adapters": len(refs), "lora_path": path}
                        print(json.dumps(mixed | out), flush=True)
        finally:
            engine.stop()
        if profiler is not None:
            Scheduler.run = scheduler_run  # type: ignore[method-assign]
            profiler.dump_stats(f"{args.profile}.{dtype}")


if __name__ == "__main__":
    main()
