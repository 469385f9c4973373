"""Short requests beside long prompts on the built-in engine, in process (the hardening issue's
"three 7.8k-token prompts still slow short requests 5x").

A short chat request ("Say hi.", greedy, --short-tokens answer tokens) is timed alone on the
idle engine (--idle-samples after a warm-up), then over and over, one after another, while
--long prompts of --prompt-tokens tokens each (max_tokens 8) are prefilled and answered.
Time to first token and total, p50 and p95, idle and loaded side by side, on a fresh engine
(the default model, float32, on CPU) per --policies value, one after the other in one process:

- `paced`: the engine as it is (app/engine/chunked.ChunkPacer: full chunks while the long
  prompts are alone, about a decode step's time while other requests run);
- `full`: every chunk PREFILL_CHUNK tokens (--chunk), as before the pacer.

    .venv/bin/python -m bench.long_prompts --long 3 --prompt-tokens 7800 --policies full,paced
"""

import argparse
import asyncio
import json
import statistics
import sys
import time

from app.engine.engine import Engine, EngineConfig
from app.engine.loader import load_base_model
from app.engine.prompts import encode, render_chat
from app.engine.requests import Delta, Failed, Finished
from app.engine.sampling import SamplingParams
from app.evals.stats import percentile
from app.settings import get_settings
from bench.starvation import SENTENCES


def summary(samples: list[tuple[float, float]]) -> dict:
    first = [f * 1000 for f, _ in samples]
    total = [t * 1000 for _, t in samples]
    return {
        "n": len(samples),
        "ttft_p50_ms": round(statistics.median(first), 1),
        "ttft_p95_ms": round(percentile(first, 95), 1),
        "total_p50_ms": round(statistics.median(total), 1),
        "total_p95_ms": round(percentile(total, 95), 1),
    }


async def timed(engine: Engine, ids: list[int], params: SamplingParams) -> tuple[float, float]:
    """(seconds to the first token, seconds to the end) of one request."""
    start = time.perf_counter()
    first = None
    async for event in engine.submit(ids, params).events():
        if first is None and isinstance(event, Delta | Finished):
            first = time.perf_counter() - start
        if isinstance(event, Failed):
            raise event.error
        if isinstance(event, Finished):
            return first or 0.0, time.perf_counter() - start
    raise RuntimeError("no end")


async def one_run(engine: Engine, long_ids: list[list[int]], args: argparse.Namespace) -> dict:
    tok = engine.tokenizer
    short = encode(tok, render_chat(tok, [{"role": "user", "content": "Say hi."}]))
    params = SamplingParams(max_tokens=args.short_tokens, temperature=0)
    await timed(engine, short, params)  # warm-up (and the chat header into the prefix cache)
    idle = [await timed(engine, short, params) for _ in range(args.idle_samples)]
    print(f"  idle: {summary(idle)}", file=sys.stderr, flush=True)
    long_params = SamplingParams(max_tokens=8, temperature=0)
    start = time.perf_counter()
    longs = [asyncio.ensure_future(timed(engine, ids, long_params)) for ids in long_ids]
    loaded: list[tuple[float, float]] = []
    while not all(t.done() for t in longs) or not loaded:
        loaded.append(await timed(engine, short, params))
        print(f"  loaded: {loaded[-1]}", file=sys.stderr, flush=True)
    long_totals = [t.result()[1] for t in longs]
    out = {
        "idle": summary(idle),
        "loaded": summary(loaded),
        "long_s": [round(s, 1) for s in long_totals],
        "load_wall_s": round(time.perf_counter() - start, 1),
    }
    out["ratio_ttft_p50"] = round(out["loaded"]["ttft_p50_ms"] / out["idle"]["ttft_p50_ms"], 1)
    out["ratio_ttft_p95"] = round(out["loaded"]["ttft_p95_ms"] / out["idle"]["ttft_p95_ms"], 1)
    out["ratio_total_p50"] = round(out["loaded"]["total_p50_ms"] / out["idle"]["total_p50_ms"], 1)
    out["ratio_total_p95"] = round(out["loaded"]["total_p95_ms"] / out["idle"]["total_p95_ms"], 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--long", type=int, default=3, help="long prompts in flight")
    parser.add_argument("--prompt-tokens", type=int, default=7800)
    parser.add_argument("--short-tokens", type=int, default=8, help="short answer's tokens")
    parser.add_argument("--idle-samples", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=512, help="PREFILL_CHUNK")
    parser.add_argument("--policies", default="full,paced", help="chunk sizing, one run each")
    args = parser.parse_args()
    settings = get_settings()
    loaded = load_base_model(settings.base_model, settings.model_cache, "cpu")
    tok = loaded.tokenizer
    text = SENTENCES * (args.prompt_tokens // 40 + 1)
    # Distinct prompts (a number in front), so no prefix is shared between them.
    long_ids = [encode(tok, f"{i}. {text}")[: args.prompt_tokens] for i in range(args.long)]
    print(
        f"{args.long} long prompts of {args.prompt_tokens} tokens (max_tokens 8); short: chat "
        f"'Say hi.', {args.short_tokens} tokens, greedy"
    )
    for policy in args.policies.split(","):
        engine = Engine(loaded, EngineConfig(prefill_chunk=args.chunk))
        engine.start()
        assert engine.scheduler is not None
        if policy == "full":
            engine.scheduler.pacer.next_tokens = lambda: args.chunk  # type: ignore[method-assign]
        try:
            result = asyncio.run(one_run(engine, long_ids, args))
        finally:
            engine.stop()
        print(json.dumps({"policy": policy, "prefill_chunk": args.chunk, **result}), flush=True)


if __name__ == "__main__":
    main()
