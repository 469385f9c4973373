"""Multi-variant serving benchmark: one base model, templates and LoRA adapters, batched.

In one run, the same workload (requests spread over the base model, 2 few-shot templates and
3 adapters; a fixed number of concurrent clients; fixed max_tokens, greedy) goes to:

  (a) the service: uvicorn with the real default model, over HTTP;
  (b) a naive baseline: in process, each request alone, peft `set_adapter` per request;
  (c) the limit: `model.generate` on the base model alone, in process, same prompts in
      batches of the client count (the most rows the clients can have in flight).

Each reports generated tokens/s, p50/p95 latency and peak memory. (b) and (c) are closed-loop
simulations of the same clients: a client sends its next request when its last one returns,
so latency includes the wait behind other clients' requests, as it does for (a).
Then, in process on the engine: time to first token of 4-shot template requests with and
without the prefix cache, and memory per loaded adapter against its file size.

This module runs (a) and prints the ratios; the workload is bench/workload.py's, (b), (c) and
the engine phase are bench/in_process.py's (each in a fresh process), --structured is
bench/structured_serving.py and --engine vllm is bench/vllm_compare.py.

    .venv/bin/python -m bench.serve [--device cuda] [--requests 64] [--clients 16]
    .venv/bin/python -m bench.serve --answers long --max-tokens 64   # decode-heavy
    .venv/bin/python -m bench.serve --engine vllm   # adaptd on vLLM vs vLLM direct vs
                                                    # built-in (bench/vllm_compare.py)

--structured instead measures structured outputs on the service: the same workload with
every other request under a JSON schema (response_format, strict) against all of it
unconstrained, run unconstrained / constrained / unconstrained on one server (the ratio uses
the mean of the two unconstrained runs), then what a new schema costs: compiling it in
process, cold and from the cache, and the latency of a 1-token request with a new schema
against one with a schema already compiled.

    .venv/bin/python -m bench.serve --structured --requests 64 --clients 16 --max-tokens 32
"""

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import httpx
from transformers import AutoTokenizer

from app.engine.loader import model_name, resolve_source
from app.engine.prompts import encode, render_chat
from app.settings import get_settings
from bench import vllm_compare
from bench.in_process import run_phase
from bench.memory import DeviceMemory
from bench.server import Server
from bench.structured_serving import structured_phases
from bench.workload import (
    LONG_QUESTIONS,
    N_ADAPTERS,
    QUESTIONS,
    TEMPLATES,
    make_adapters,
    service_phase,
)


def orchestrate(args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="adaptd-serve-bench-"))
    os.environ["DATA_DIR"] = str(data_dir)
    os.environ.pop("DATABASE_URL", None)
    os.environ["RATE_LIMIT_PER_MINUTE"] = "0"
    os.environ["MAX_BATCH_SIZE"] = str(args.clients)
    os.environ["DEVICE"] = args.device
    if args.threads:  # every process (server and phases) gets the same CPU thread count
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    settings = get_settings()
    print(
        f"device={args.device} requests={args.requests} clients={args.clients} "
        f"max_tokens={args.max_tokens} answers={args.answers} base={settings.base_model} "
        f"threads={os.environ.get('OMP_NUM_THREADS', 'default')}",
        flush=True,
    )
    try:
        _measure(args, data_dir, settings)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _measure(args: argparse.Namespace, data_dir: Path, settings) -> None:
    if args.device.startswith("cuda"):
        DeviceMemory.baseline = DeviceMemory.used()
    base_name = model_name(settings.base_model)
    with Server(data_dir=data_dir) as server:
        adapters = make_adapters(data_dir, settings.base_model)
        c = httpx.Client(base_url=server.url, headers=server.headers, timeout=600)
        for body in TEMPLATES:
            r = c.post("/v1/templates", json=body)
            assert r.status_code == 201, r.text
        tokenizer = AutoTokenizer.from_pretrained(
            resolve_source(settings.base_model, settings.model_cache)
        )
        variants = (
            [("base", None)]
            + [(f"tmpl:{t['name']}", None) for t in TEMPLATES]
            + [(name, name) for name in adapters]
        )
        requests, few_shot = [], []
        for i in range(args.requests):
            model, adapter = variants[i % len(variants)]
            pool = LONG_QUESTIONS if args.answers == "long" else QUESTIONS
            question = pool[(i // len(variants)) % len(pool)]
            messages = [{"role": "user", "content": question}]
            if model.startswith("tmpl:"):
                rendered = c.post(
                    f"/v1/templates/{model[5:]}/render", json={"messages": messages}
                ).json()
                ids, prefix_len = encode(tokenizer, rendered["prompt"]), rendered["prefix_tokens"]
                assert rendered["examples_used"] == 4 and len(ids) == rendered["prompt_tokens"]
                few_shot.append({"ids": ids, "prefix_len": prefix_len})
            else:
                ids, prefix_len = encode(tokenizer, render_chat(tokenizer, messages)), 0
            requests.append(
                {
                    "model": base_name if model == "base" else model,
                    "adapter": adapter,
                    "question": question,
                    "ids": ids,
                }
            )
        work = {
            "requests": requests,
            "few_shot": few_shot,
            "adapters": adapters,
            "clients": args.clients,
            "max_tokens": args.max_tokens,
        }
        work_file = data_dir / "work.json"
        work_file.write_text(json.dumps(work))
        print(
            f"workload: {len(requests)} requests over {len(variants)} variants "
            f"(base, 2 four-shot templates, {N_ADAPTERS} adapters), prompt tokens "
            f"min/mean/max {min(len(r['ids']) for r in requests)}/"
            f"{statistics.mean(len(r['ids']) for r in requests):.0f}/"
            f"{max(len(r['ids']) for r in requests)}",
            flush=True,
        )
        service = asyncio.run(
            service_phase(
                server.url,
                server.headers,
                requests,
                args.clients,
                args.max_tokens,
                server.proc.pid,
                args.device,
            )
        )
        print(f"(a) service : {json.dumps(service)}", flush=True)
        if args.structured:
            structured_phases(args, server, requests, service, tokenizer)
            return
    env = {**os.environ}
    naive = run_phase("naive", work_file, args.device, env)
    print(f"(b) naive   : {json.dumps(naive)}", flush=True)
    limit = run_phase("limit", work_file, args.device, env)
    print(f"(c) limit   : {json.dumps(limit)}", flush=True)
    print(
        f"ratios: (a)/(b) tokens/s = {service['tokens_per_s'] / naive['tokens_per_s']:.2f} "
        f"(target >= 4); (a)/(c) tokens/s = {service['tokens_per_s'] / limit['tokens_per_s']:.2f}"
        f" (target >= 0.7)",
        flush=True,
    )
    engine = run_phase("engine", work_file, args.device, env)
    ratio = engine["ttft_uncached_ms"] / engine["ttft_cached_ms"]
    print(
        f"prefix cache: 4-shot template requests ({engine['requests']}, prompt "
        f"{engine['prompt_tokens_mean']} tokens of which {engine['prefix_tokens_mean']} prefix): "
        f"TTFT median cached {engine['ttft_cached_ms']} ms, uncached "
        f"{engine['ttft_uncached_ms']} ms, ratio {ratio:.2f} (target >= 2)",
        flush=True,
    )
    for row in engine["adapters"]:
        print(
            f"adapter memory: {row['adapter']}: file {row['file_bytes']} B, held "
            f"{row['held_bytes']} B ({row['held_bytes'] / row['file_bytes']:.2f}x file, "
            f"target <= 1.5), process RSS grew {row['rss_delta_bytes']} B on load",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per process")
    parser.add_argument(
        "--answers", choices=["short", "long"], default="short", help="question set"
    )
    parser.add_argument(
        "--engine", choices=["local", "vllm"], default="local", help="vllm: vllm_compare.py"
    )
    parser.add_argument("--vllm-dtype", default="bfloat16", help="with --engine vllm")
    parser.add_argument(
        "--no-builtin", action="store_true", help="with --engine vllm: only (d) and (e)"
    )
    parser.add_argument(
        "--builtin-dtypes",
        default="bfloat16,float32",
        help="with --engine vllm: one built-in service per DTYPE, side by side",
    )
    parser.add_argument(
        "--no-adaptd-vllm", action="store_true", help="with --engine vllm: skip (d)"
    )
    parser.add_argument(
        "--vllm-base-only",
        action="store_true",
        help="with --engine vllm: vLLM direct on the base-only workload only (its CPU LoRA "
        "path is slow)",
    )
    parser.add_argument(
        "--structured", action="store_true", help="JSON-schema half of the load vs none"
    )
    args = parser.parse_args()
    if args.engine == "vllm":
        vllm_compare.run(args)
        return
    orchestrate(args)


if __name__ == "__main__":
    main()
