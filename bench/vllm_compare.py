"""`python -m bench.serve --engine vllm`: the same chat workload, in one run, through

  (d) adaptd on vLLM: the service with ENGINE=vllm, over HTTP, on one local vLLM server;
  (e) vLLM direct: that same vLLM server's /v1/completions with the token ids adaptd
      renders for the same requests (so (d)/(e) is the cost of adaptd's control plane);
  (a) adaptd on its built-in engine, over HTTP, once per DTYPE in --builtin-dtypes (one
      service each, on the same data folder);

each for a base-only and a mixed workload (base + 3 LoRA adapters, round robin). Closed
loop: `clients` clients, each sends its next request when its last one returned. Greedy,
fixed max_tokens. The phases of a workload run one after another, never at the same time.
"""

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import time
from pathlib import Path

import httpx

from bench.server import Server, temporary_data_dir
from bench.workload import LONG_QUESTIONS, N_ADAPTERS, QUESTIONS, make_adapters, summary
from tests.processes import free_port


async def closed_loop_run(one, items: list, clients: int) -> dict:
    pending = list(items)
    results: list[tuple[float, int]] = []

    async def client() -> None:
        while pending:
            item = pending.pop(0)
            t0 = time.perf_counter()
            tokens = await one(item)
            results.append((time.perf_counter() - t0, tokens))

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - started
    return summary(sum(t for _, t in results), wall, [lat for lat, _ in results], {})


async def via_adaptd(url: str, headers: dict, work: list[dict], args) -> dict:
    limits = httpx.Limits(max_connections=args.clients + 4)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=900) as c:

        async def one(req: dict) -> int:
            body = {
                "model": req["model"],
                "messages": [{"role": "user", "content": req["question"]}],
                "max_tokens": args.max_tokens,
                "temperature": 0,
            }
            r = await c.post("/v1/chat/completions", json=body)
            r.raise_for_status()
            return r.json()["usage"]["completion_tokens"]

        for model in dict.fromkeys(r["model"] for r in work):  # warm-up: loads adapters
            await one({"model": model, "question": QUESTIONS[0]})
        return await closed_loop_run(one, work, args.clients)


async def vllm_direct(
    url: str,
    work: list[dict],
    args,
    eos: set[int],
    adapters: dict[str, str],
) -> dict:
    limits = httpx.Limits(max_connections=args.clients + 4)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=900) as c:
        for name in dict.fromkeys(r["model"] for r in work):
            if name in adapters:  # loaded under the name adaptd uses ("already loaded" is fine)
                await c.post(
                    "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": adapters[name]}
                )

        async def one(req: dict) -> int:
            body = {
                "model": req["model"],
                "prompt": req["ids"],
                "max_tokens": args.max_tokens,
                "temperature": 0,
                "return_token_ids": True,
            }
            r = await c.post("/v1/completions", json=body)
            r.raise_for_status()
            # Counted as adaptd counts: the end-of-sequence token is not a completion token.
            return len([t for t in r.json()["choices"][0]["token_ids"] if t not in eos])

        for model in dict.fromkeys(r["model"] for r in work):
            await one({**work[0], "model": model})
        return await closed_loop_run(one, work, args.clients)


def run(args: argparse.Namespace) -> None:
    data_dir = temporary_data_dir("adaptd-vllm-bench-", args.clients)
    try:
        _run(args, data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _run(args: argparse.Namespace, data_dir: Path) -> None:
    from app.engine.loader import model_name, resolve_source
    from app.engine.prompts import encode, render_chat
    from app.engine.vllm.launch import start_server, wait_ready
    from app.settings import get_settings

    settings = get_settings()
    base = model_name(settings.base_model)
    port = free_port()
    vllm_url = f"http://127.0.0.1:{port}"
    print(
        f"engine=vllm requests={args.requests} clients={args.clients} "
        f"max_tokens={args.max_tokens} vllm_dtype={args.vllm_dtype} "
        f"built-in dtypes={args.builtin_dtypes} built-in threads={args.threads or 'default'} "
        f"base={settings.base_model} load={os.getloadavg()}",
        flush=True,
    )
    vllm = start_server(settings, port, data_dir / "vllm.log", dtype=args.vllm_dtype)
    try:
        wait_ready(vllm_url, 1800, vllm)
        dtypes = [] if args.no_builtin else args.builtin_dtypes.split(",")
        key = {"ADAPTD_ADMIN_KEY": "sk-adaptd-bench-" + secrets.token_hex(8)}
        threads = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
        vllm_env = {"ENGINE": "vllm", "VLLM_URLS": vllm_url, **key}
        with contextlib.ExitStack() as stack:
            locals_ = {
                dtype: stack.enter_context(
                    Server({"ENGINE": "local", "DTYPE": dtype, **threads, **key}, data_dir)
                )
                for dtype in dtypes
            }
            on_vllm = (
                None if args.no_adaptd_vllm else stack.enter_context(Server(vllm_env, data_dir))
            )
            adapter_paths = make_adapters(data_dir, settings.base_model)
            adapters = list(adapter_paths)
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(
                resolve_source(settings.base_model, settings.model_cache)
            )
            eos = {tokenizer.eos_token_id}
            questions = LONG_QUESTIONS if args.answers == "long" else QUESTIONS
            workloads = {"base only": [base], f"base + {N_ADAPTERS} adapters": [base, *adapters]}
            nan = {"tokens_per_s": float("nan")}
            rows = []
            for label, models in workloads.items():
                work = []
                for i in range(args.requests):
                    question = questions[(i // len(models)) % len(questions)]
                    messages = [{"role": "user", "content": question}]
                    ids = encode(tokenizer, render_chat(tokenizer, messages))
                    work.append(
                        {"model": models[i % len(models)], "question": question, "ids": ids}
                    )
                direct = nan
                if not (args.vllm_base_only and len(models) > 1):
                    direct = asyncio.run(vllm_direct(vllm_url, work, args, eos, adapter_paths))
                print(f"[{label}] (e) vLLM direct      : {json.dumps(direct)}", flush=True)
                adaptd_vllm = nan
                if on_vllm is not None:
                    adaptd_vllm = asyncio.run(via_adaptd(on_vllm.url, on_vllm.headers, work, args))
                print(f"[{label}] (d) adaptd on vLLM   : {json.dumps(adaptd_vllm)}", flush=True)
                builtin = {}
                for dtype, local in locals_.items():
                    builtin[dtype] = asyncio.run(via_adaptd(local.url, local.headers, work, args))
                    print(
                        f"[{label}] (a) built-in {dtype:8s}: {json.dumps(builtin[dtype])} "
                        f"load={os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
                rows.append((label, builtin, adaptd_vllm, direct))
            print_table(rows, dtypes)
    finally:
        vllm.terminate()
        try:
            vllm.wait(timeout=60)
        except Exception:
            vllm.kill()


def print_table(rows: list, dtypes: list[str]) -> None:
    rate = lambda r: r["tokens_per_s"]  # noqa: E731
    head = " | ".join(f"built-in {d}" for d in dtypes)
    print(f"\n| workload | {head} | adaptd on vLLM | vLLM direct | (d)/(e) |")
    print("|---|" + "---|" * (len(dtypes) + 3))
    for label, a, d, e in rows:
        cells = " | ".join(f"{rate(a[t])} tok/s" for t in dtypes)
        print(
            f"| {label} | {cells} | {rate(d)} tok/s | {rate(e)} tok/s | {rate(d) / rate(e):.2f} |"
        )
    for t in dtypes:
        base, mixed = rows[0][1][t], rows[1][1][t]
        print(
            f"built-in {t}: / vLLM direct base only = {rate(base) / rate(rows[0][3]):.2f} "
            f"(target >= 1.0 in bf16); mixed / base only = {rate(mixed) / rate(base):.2f} "
            "(target >= 0.95)"
        )
    if {"bfloat16", "float32"} <= set(dtypes):
        for label, a, _, _ in rows:
            ratio = rate(a["bfloat16"]) / rate(a["float32"])
            print(f"built-in bf16 / fp32 [{label}] = {ratio:.2f}")
    print(f"load average at the end: {os.getloadavg()}", flush=True)
