"""bf16 against fp32 on the built-in engine, in one process, on the default model:

- greedy answers: the same chat prompts (short and long questions, SST-2 reviews to
  classify) through a bf16 engine and an fp32 engine; the share whose tokens are identical,
  and how far the two agree on average before they part;
- single stream: one request alone, long answer, greedy, tokens per second (wall and per
  CPU second of the scheduler thread), the two dtypes alternating.

    .venv/bin/python -m bench.dtype --prompts 50 --max-tokens 32 --threads 1
"""

import argparse
import asyncio
import json
import os
from pathlib import Path

import torch

from app.engine.engine import Engine, EngineConfig
from app.engine.loader import load_base_model
from app.engine.prompts import encode, render_chat
from app.engine.requests import Finished
from app.engine.sampling import SamplingParams
from app.settings import get_settings
from bench.steps import ForwardTimer, measure
from bench.workload import LONG_QUESTIONS, QUESTIONS

SST2 = Path("../shared/datasets/sst2/test.jsonl")  # as bench/train.py: from the checkout
INSTRUCTION = "Classify the sentiment of this movie review as positive or negative.\nReview: "


def prompts(n: int, sst2: Path) -> list[str]:
    texts = list(dict.fromkeys([*QUESTIONS, *LONG_QUESTIONS]))
    if sst2.exists():
        with sst2.open() as f:
            for line in f:
                if len(texts) >= n:
                    break
                texts.append(INSTRUCTION + json.loads(line)["text"])
    return texts[:n]


async def answers(engine: Engine, ids: list[list[int]], max_tokens: int) -> list[Finished]:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    handles = [engine.submit(x, params) for x in ids]
    return list(await asyncio.gather(*(h.result() for h in handles)))


def common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--stream-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="single-stream rounds per dtype")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--sst2", type=Path, default=SST2)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = get_settings()
    print(
        f"base={settings.base_model} threads={torch.get_num_threads()} load={os.getloadavg()}",
        flush=True,
    )
    engines: dict[str, Engine] = {}
    timers: dict[str, ForwardTimer] = {}
    for dtype in ("bfloat16", "float32"):
        loaded = load_base_model(settings.base_model, settings.model_cache, "cpu", dtype)
        engine = Engine(loaded, EngineConfig(max_batch_size=16))
        timers[dtype] = ForwardTimer(engine.model)
        engine.start()
        engines[dtype] = engine
    try:
        texts = prompts(args.prompts, args.sst2)
        tok = engines["float32"].tokenizer
        ids = [encode(tok, render_chat(tok, [{"role": "user", "content": t}])) for t in texts]
        got = {d: asyncio.run(answers(e, ids, args.max_tokens)) for d, e in engines.items()}
        pairs = list(zip(got["bfloat16"], got["float32"], strict=True))
        same = sum(a.token_ids == b.token_ids for a, b in pairs)
        same_text = sum(a.text == b.text for a, b in pairs)
        agree = [common_prefix(a.token_ids, b.token_ids) for a, b in pairs]
        lengths = [len(b.token_ids) for _, b in pairs]
        print(
            f"greedy bf16 vs fp32: {same}/{len(pairs)} identical token for token "
            f"({same / len(pairs):.2f}), {same_text} identical text; tokens agreed before "
            f"parting: mean {sum(agree) / len(agree):.1f} of {sum(lengths) / len(lengths):.1f}",
            flush=True,
        )
        for rnd in range(args.rounds):
            for dtype, engine in engines.items():
                out = measure(engine, timers[dtype], 1, args.stream_tokens)
                print(
                    json.dumps({"single_stream": dtype, "round": rnd, **out}),
                    f"load={os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    finally:
        for engine in engines.values():
            engine.stop()


if __name__ == "__main__":
    main()
