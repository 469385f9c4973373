"""LoRA overhead through the service: base only against base + 3 adapters mixed, interleaved.

One built-in service per DTYPE (uvicorn, real default model, SQLite), the same 3 random LoRA
adapters bench/workload.py registers, and the same chat requests (16 closed-loop clients, greedy,
fixed max_tokens) sent as two workloads: every request to the base model, or round robin over
the base model and the 3 adapters. The two alternate on one server (base, mixed, then mixed,
base, ...: each goes first in half the rounds), so drift in the machine's load falls on both;
the ratio is taken per round and its median printed. Every round after the first runs with the
adapters loaded (a server that serves adapters has them resident); round 1's base phase runs
before any adapter was loaded. Generated tokens are printed per phase: adapters that stop
their answers sooner would move tokens/s without any change in the engine, which is why the
default questions (--answers long) ask for answers longer than max_tokens.

    .venv/bin/python -m bench.lora_overhead --dtypes bfloat16,float32 --rounds 3
"""

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics

from bench.server import Server, temporary_data_dir
from bench.vllm_compare import via_adaptd
from bench.workload import LONG_QUESTIONS, QUESTIONS, make_adapters


def workloads(
    base: str, adapters: list[str], requests: int, pool: list[str]
) -> dict[str, list[dict]]:
    # The same questions in the same order in both: only the model a request names differs.
    # Consecutive requests ask different questions: identical prompts in flight together
    # would finish together in the base-only workload (same greedy answer) and batch better
    # than the mixed one for a reason that has nothing to do with LoRA.
    models = [base, *adapters]
    questions = [pool[i % len(pool)] for i in range(requests)]
    return {
        "base": [{"model": base, "question": q} for q in questions],
        "mixed": [
            {"model": models[i % len(models)], "question": q} for i, q in enumerate(questions)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument(
        "--answers",
        choices=["short", "long"],
        default="long",
        help="long: questions whose answers run to max_tokens, so both workloads generate "
        "nearly the same tokens",
    )
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS of the service")
    args = parser.parse_args()
    data_dir = temporary_data_dir("adaptd-lora-overhead-", args.clients)
    from app.engine.loader import model_name
    from app.settings import get_settings

    settings = get_settings()
    base = model_name(settings.base_model)
    print(
        f"requests={args.requests} clients={args.clients} max_tokens={args.max_tokens} "
        f"answers={args.answers} "
        f"rounds={args.rounds} threads={args.threads or 'default'} cpus={os.cpu_count()} "
        f"load={os.getloadavg()[0]:.2f}",
        flush=True,
    )
    key = {"ADAPTD_ADMIN_KEY": "sk-adaptd-bench-" + secrets.token_hex(8)}
    threads = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    try:
        work: dict[str, list[dict]] = {}
        for dtype in args.dtypes.split(","):
            env = {"ENGINE": "local", "DTYPE": dtype, **threads, **key}
            with Server(env, data_dir) as server:
                if not work:  # the first server has made the database
                    adapters = list(make_adapters(data_dir, settings.base_model))
                    pool = LONG_QUESTIONS if args.answers == "long" else QUESTIONS
                    work = workloads(base, adapters, args.requests, pool)
                ratios = []
                for r in range(args.rounds):
                    got = {}
                    order = ["base", "mixed"] if r % 2 == 0 else ["mixed", "base"]
                    for label in order:
                        got[label] = asyncio.run(
                            via_adaptd(server.url, server.headers, work[label], args)
                        )
                        print(
                            f"{dtype} round {r + 1} {label:5s}: {json.dumps(got[label])} "
                            f"load={os.getloadavg()[0]:.1f}",
                            flush=True,
                        )
                    ratios.append(got["mixed"]["tokens_per_s"] / got["base"]["tokens_per_s"])
                print(
                    f"{dtype}: mixed / base tokens/s per round {[round(x, 3) for x in ratios]}, "
                    f"median {statistics.median(ratios):.3f} (target >= 0.95)",
                    flush=True,
                )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
