"""One request alone: the built-in engine against plain `model.generate`, side by side in
one process, on the same model object.

For each dtype and torch thread count the two sides alternate, `--rounds` times each, on
the same chat prompt, greedy, exactly `--tokens` new tokens (the prompt's greedy answer is
longer than that; the output says whether the engine's tokens equal generate's). Prefill is
run alone (one new token) and subtracted, so the figures are per decode step:

- wall_ms: wall time; on a shared machine other processes inflate it;
- cpu_ms: CPU time of the whole process, all threads (at one torch thread, the work itself);
- forward_cpu_ms: CPU time of the calling thread inside `model.forward` (all of the forward
  at one torch thread; the rest of cpu_ms is each side's own host work, and other threads);
- switches: voluntary context switches per step, all threads (threads going to sleep).

Where generate runs matters at more than one torch thread. PyTorch's CPU wheels use GNU
OpenMP (libgomp): each thread that runs a parallel op gets a pool of worker threads of its
own, and once the process holds more such threads than it has CPUs, libgomp cuts its
spin-wait from ~300,000 iterations to 100, so idle workers sleep in futex after every
parallel region and each region pays a wake-up. A process where only one thread runs torch
(the server: only the engine's scheduler thread) spins; one where two threads have (two
engines, as bench/dtype.py starts, or generate on the main thread beside an engine) sleeps.
`--pools own` gives each side that one-thread condition: generate runs on a fresh thread,
and the engine's scheduler thread is started before its runs and stopped after (a thread's
pool goes when it ends). `--pools shared` keeps a second pool alive throughout (a parked
thread that ran one parallel op), as in bench/dtype.py. On a busy machine spinning is the
slower mode by far (a worker spins while the thread it waits for is descheduled), on an idle
one the faster.

`--interleaved` adds the comparison least disturbed by other processes: the forward pass
alone, one decode step each in turn on the calling thread, with the inputs generate passes
(a stock cache, the mask) and those the engine's decode passes (its growing cache, the mask,
positions, logits_to_keep), CPU time per step.

    .venv/bin/python -m bench.single --dtypes float32,bfloat16 --threads 1,2 --rounds 3
    .venv/bin/python -m bench.single --threads 2 --pools shared
    .venv/bin/python -m bench.single --threads 1 --rounds 1 --interleaved
    .venv/bin/python -m bench.single --threads 1 --rounds 1 --profile /tmp/single  # op tables
"""

import argparse
import asyncio
import json
import os
import resource
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from app.engine.batch import cache_from, kv_of
from app.engine.engine import Engine, EngineConfig
from app.engine.loader import LoadedModel, load_base_model
from app.engine.prompts import encode, render_chat
from app.engine.sampling import SamplingParams
from app.settings import get_settings
from bench.steps import ForwardTimer

QUESTION = "Describe the water cycle in detail."
Run = Callable[[int], tuple[int, ...]]  # new tokens -> the generated ids


def on_fresh_thread(fn: Callable[[], tuple[int, ...]]) -> tuple[int, ...]:
    """Run `fn` on a thread of its own, so its OpenMP pool goes when it returns."""
    result: list[tuple[int, ...]] = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    thread.join()
    return result[0]


def generate_ids(model: torch.nn.Module, ids: list[int], tokens: int) -> tuple[int, ...]:
    x = torch.tensor([ids])
    with torch.inference_mode():
        out = model.generate(
            x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
        )
    return tuple(out[0, len(ids) :].tolist())


def engine_ids(engine: Engine, ids: list[int], tokens: int) -> tuple[int, ...]:
    async def go() -> tuple[int, ...]:
        handle = engine.submit(ids, SamplingParams(max_tokens=tokens, temperature=0.0))
        return (await handle.result()).token_ids

    return asyncio.run(go())


@contextmanager
def engine_running(engine: Engine, own_pool: bool) -> Iterator[None]:
    """With own pools the scheduler thread lives only for this side's runs."""
    if own_pool:
        engine.start()
    try:
        yield
    finally:
        if own_pool:
            engine.stop()


@contextmanager
def second_pool() -> Iterator[None]:
    """A parked thread holding an OpenMP pool: it ran one op big enough to go parallel."""
    release = threading.Event()

    def park() -> None:
        torch.ones(1 << 22).mul_(2)
        release.wait()

    thread = threading.Thread(target=park, daemon=True)
    thread.start()
    try:
        yield
    finally:
        release.set()
        thread.join()


def sample() -> tuple[float, float, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads, ended ones included
    return time.perf_counter(), time.process_time(), usage.ru_nvcsw


def measure(run: Run, timer: ForwardTimer, tokens: int) -> tuple[list[float], tuple[int, ...]]:
    """[wall_ms, cpu_ms, forward_cpu_ms, switches] per decode step: a full run less a
    prefill-only one."""
    deltas = []
    for n in (1, tokens):
        f0, s0 = timer.seconds, sample()
        out = run(n)
        s1 = sample()
        deltas.append([b - a for a, b in zip(s0, s1, strict=True)] + [timer.seconds - f0])
    (w1, c1, n1, f1), (w, c, n, f) = deltas
    steps = len(out) - 1
    per_step = [1000 * (w - w1), 1000 * (c - c1), 1000 * (f - f1), n - n1]
    return [round(x / steps, 2) for x in per_step], out


def compare(
    loaded: LoadedModel, timer: ForwardTimer, args: argparse.Namespace, threads: int
) -> dict:
    tok = loaded.tokenizer
    ids = encode(tok, render_chat(tok, [{"role": "user", "content": QUESTION}]))
    own = args.pools == "own"
    engine = Engine(loaded, EngineConfig())
    if not own:
        engine.start()

    def engine_side(n: int) -> tuple[int, ...]:
        with engine_running(engine, own):
            return engine_ids(engine, ids, n)

    def generate_side(n: int) -> tuple[int, ...]:
        if own:
            return on_fresh_thread(lambda: generate_ids(loaded.model, ids, n))
        return generate_ids(loaded.model, ids, n)

    sides: dict[str, Run] = {"engine": engine_side, "generate": generate_side}
    try:
        with nullcontext() if own else second_pool():
            for run in sides.values():  # warm-up, and the engine's cached chat prefix
                run(2)
            runs: dict[str, list[list[float]]] = {side: [] for side in sides}
            answers: dict[str, tuple[int, ...]] = {}
            for _ in range(args.rounds):
                for side, run in sides.items():
                    step, answers[side] = measure(run, timer, args.tokens)
                    runs[side].append(step)
            if args.profile:
                profile(
                    sides,
                    args.tokens,
                    args.profile / f"{str(loaded.dtype).removeprefix('torch.')}-t{threads}",
                )
    finally:
        engine.stop()
    summary: dict = {}
    for side, rows in runs.items():
        medians = [round(statistics.median(col), 2) for col in zip(*rows, strict=True)]
        keys = ("wall_ms", "cpu_ms", "forward_cpu_ms", "switches")
        summary[side] = {**dict(zip(keys, medians, strict=True)), "tokens": len(answers[side])}
    return {
        **summary,
        "engine_vs_generate_cpu": round(
            summary["engine"]["cpu_ms"] / summary["generate"]["cpu_ms"], 2
        ),
        "same_tokens": answers["engine"] == answers["generate"],
        "runs": runs,
    }


def interleaved(loaded: LoadedModel, tokens: int, rounds: int) -> dict:
    """CPU ms per decode forward, generate's inputs against the engine's, a step each in
    turn (the order flipped every step), and whether both picked the same greedy tokens."""
    model, tok = loaded.model, loaded.tokenizer
    ids = torch.tensor([encode(tok, render_chat(tok, [{"role": "user", "content": QUESTION}]))])
    spent: dict[str, list[float]] = {"generate": [], "engine": []}
    picked: dict[str, list[int]] = {"generate": [], "engine": []}
    with torch.inference_mode():
        for _ in range(rounds):
            first = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
            token = int(first.logits[0, -1].argmax())
            state = {side: (first.cache, token) for side in spent}
            # The engine re-holds a prefill's cache in its own growing layers (a copy-free view).
            state["engine"] = (cache_from(kv_of(first.cache)), token)
            for step in range(tokens):
                length = ids.shape[1] + step
                for side in list(spent) if step % 2 else list(spent)[::-1]:
                    cache, token = state[side]
                    kwargs = {
                        "input_ids": torch.tensor([[token]]),
                        "attention_mask": torch.ones((1, length + 1), dtype=torch.long),
                        "cache": cache,
                        "use_cache": True,
                    }
                    if side == "engine":
                        kwargs |= {"position_ids": torch.tensor([[length]]), "logits_to_keep": 1}
                    t0 = time.thread_time()
                    out = model(**kwargs)
                    spent[side].append(time.thread_time() - t0)
                    state[side] = (out.cache, int(out.logits[0, -1].argmax()))
                    picked[side].append(state[side][1])
    means = {side: round(1000 * statistics.mean(v), 2) for side, v in spent.items()}
    return {
        "forward_cpu_ms": means,
        "engine_vs_generate": round(means["engine"] / means["generate"], 3),
        "same_tokens": picked["engine"] == picked["generate"],
    }


def profile(sides: dict[str, Run], tokens: int, out: Path) -> None:
    """torch.profiler over one full run per side, every thread, op tables by self CPU."""
    from torch._C._profiler import _ExperimentalConfig
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    out.mkdir(parents=True, exist_ok=True)
    for side, run in sides.items():
        with torch_profile(
            activities=[ProfilerActivity.CPU],
            record_shapes=True,
            experimental_config=_ExperimentalConfig(profile_all_threads=True),
        ) as prof:
            run(tokens)
        table = prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=40
        )
        (out / f"{side}.txt").write_text(table)
        print(f"profile: {out / side}.txt", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pools", choices=("own", "shared"), default="own")
    parser.add_argument("--interleaved", action="store_true", help="forwards a step in turn")
    parser.add_argument("--profile", type=Path, help="write torch.profiler tables here")
    args = parser.parse_args()
    settings = get_settings()
    print(f"cpus={os.cpu_count()} pools={args.pools} load={os.getloadavg()[0]:.2f}", flush=True)
    for dtype in args.dtypes.split(","):
        loaded = load_base_model(settings.base_model, settings.model_cache, "cpu", dtype)
        timer = ForwardTimer(loaded.model)
        for threads in (int(t) for t in args.threads.split(",")):
            # Read once per thread, at its first parallel op: every engine and generate
            # thread here starts after this.
            torch.set_num_threads(threads)
            out = compare(loaded, timer, args, threads)
            print(
                json.dumps({"dtype": dtype, "threads": threads, **out}),
                f"load={os.getloadavg()[0]:.1f}",
                flush=True,
            )
            if args.interleaved:
                out = interleaved(loaded, args.tokens, args.rounds)
                print(json.dumps({"dtype": dtype, "threads": threads, "interleaved": out}))


if __name__ == "__main__":
    main()
