"""`bench/serve.py --engine vllm`: the same chat workload, in one run, through

  (d) adaptd on vLLM: the service with ENGINE=vllm, over HTTP, on one local vLLM server;
  (e) vLLM direct: that same vLLM server's /v1/completions with the token ids adaptd
      renders for the same requests (so (d)/(e) is the cost of adaptd's control plane);
  (a) adaptd on its built-in engine, over HTTP;

each for a base-only and a mixed workload (base + 3 LoRA adapters, round robin). Closed
loop: `clients` clients, each sends its next request when its last one returned. Greedy,
fixed max_tokens. The phases of a workload run one after another, never at the same time.
"""

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.serve import LONG_QUESTIONS, N_ADAPTERS, QUESTIONS, make_adapters, summary
from bench.server import Server, free_port


async def closed_loop_run(one, items: list, clients: int) -> dict:  # noqa: ANN001
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


async def via_adaptd(url: str, headers: dict, work: list[dict], args) -> dict:  # noqa: ANN001
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
    adapters: dict[str, str],  # noqa: ANN001
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
    data_dir = Path(tempfile.mkdtemp(prefix="adaptd-vllm-bench-"))
    os.environ.update(
        {
            "DATA_DIR": str(data_dir),
            "RATE_LIMIT_PER_MINUTE": "0",
            "MAX_BATCH_SIZE": str(args.clients),
        }
    )
    os.environ.pop("DATABASE_URL", None)
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
        f"max_tokens={args.max_tokens} vllm_dtype={args.vllm_dtype} built-in dtype=float32 "
        f"base={settings.base_model}",
        flush=True,
    )
    vllm = start_server(settings, port, data_dir / "vllm.log", dtype=args.vllm_dtype)
    try:
        wait_ready(vllm_url, 1800, vllm)
        local_env = {"ENGINE": "local"}
        vllm_env = {"ENGINE": "vllm", "VLLM_URLS": vllm_url}
        with Server(local_env, data_dir) as local, Server(vllm_env, data_dir) as on_vllm:
            adapter_paths = make_adapters(data_dir, settings.base_model)
            adapters = list(adapter_paths)
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(
                resolve_source(settings.base_model, settings.model_cache)
            )
            eos = {tokenizer.eos_token_id}
            questions = LONG_QUESTIONS if args.answers == "long" else QUESTIONS
            workloads = {"base only": [base], f"base + {N_ADAPTERS} adapters": [base, *adapters]}
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
                direct = asyncio.run(vllm_direct(vllm_url, work, args, eos, adapter_paths))
                print(f"[{label}] (e) vLLM direct      : {json.dumps(direct)}", flush=True)
                adaptd_vllm = asyncio.run(via_adaptd(on_vllm.url, on_vllm.headers, work, args))
                print(f"[{label}] (d) adaptd on vLLM   : {json.dumps(adaptd_vllm)}", flush=True)
                builtin = {"tokens_per_s": float("nan")}
                if not args.no_builtin:
                    builtin = asyncio.run(via_adaptd(local.url, local.headers, work, args))
                print(f"[{label}] (a) adaptd built-in  : {json.dumps(builtin)}", flush=True)
                rows.append((label, builtin, adaptd_vllm, direct))
            print("\n| workload | adaptd built-in | adaptd on vLLM | vLLM direct | (d)/(e) |")
            print("|---|---|---|---|---|")
            for label, a, d, e in rows:
                print(
                    f"| {label} | {a['tokens_per_s']} tok/s | {d['tokens_per_s']} tok/s | "
                    f"{e['tokens_per_s']} tok/s | {d['tokens_per_s'] / e['tokens_per_s']:.2f} |"
                )
            ratios = [d["tokens_per_s"] / e["tokens_per_s"] for _, _, d, e in rows]
            print(
                f"ratios: adaptd on vLLM / vLLM direct = "
                f"{', '.join(f'{r:.2f}' for r in ratios)} (target >= 0.9); "
                f"mean {statistics.mean(ratios):.2f}",
                flush=True,
            )
    finally:
        vllm.terminate()
        try:
            vllm.wait(timeout=60)
        except Exception:  # noqa: BLE001
            vllm.kill()
