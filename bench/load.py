"""Load test: N concurrent clients against the default model for a bounded time.

Prints request counts by outcome (only explicit 503/429 back-pressure may fail), p50/p95
latency, generated tokens/s, and the server's memory after warm-up and at the end.

    .venv/bin/python -m bench.load --clients 200 --seconds 120
"""

import argparse
import asyncio
import statistics
import time
from collections import Counter

import httpx

from bench.server import Server

PROMPTS = [
    "What is the capital of France?",
    "Name a fruit that is yellow.",
    "Say hello in Spanish.",
    "What is 2 plus 2?",
    "Give one word for happy.",
]


async def client_loop(
    c: httpx.AsyncClient, i: int, stop_at: float, out: list, max_tokens: int
) -> None:
    n = 0
    while time.monotonic() < stop_at:
        body = {
            "model": "smollm2-135m-instruct",
            "max_tokens": max_tokens,
            "temperature": 0,
            "messages": [{"role": "user", "content": PROMPTS[(i + n) % len(PROMPTS)]}],
        }
        started = time.monotonic()
        try:
            r = await c.post("/v1/chat/completions", json=body)
            tokens = r.json()["usage"]["completion_tokens"] if r.status_code == 200 else 0
            out.append((r.status_code, time.monotonic() - started, tokens, started))
            if r.status_code in (429, 503):
                await asyncio.sleep(float(r.headers.get("retry-after", "1")))
        except httpx.HTTPError as exc:
            out.append((type(exc).__name__, time.monotonic() - started, 0, started))
        n += 1


async def run(server: Server, clients: int, seconds: float, max_tokens: int) -> None:
    results: list = []
    memory: list[tuple[float, float]] = []
    limits = httpx.Limits(max_connections=clients + 10)
    async with httpx.AsyncClient(
        base_url=server.url, headers=server.headers, limits=limits, timeout=httpx.Timeout(600)
    ) as c:
        started = time.monotonic()
        stop_at = started + seconds
        tasks = [
            asyncio.create_task(client_loop(c, i, stop_at, results, max_tokens))
            for i in range(clients)
        ]
        while not all(t.done() for t in tasks):
            memory.append((time.monotonic() - started, server.rss_mib()))
            await asyncio.sleep(1)
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
    statuses = Counter(r[0] for r in results)
    ok = [r for r in results if r[0] == 200]
    lat = sorted(r[1] for r in ok)
    failed = {k: v for k, v in statuses.items() if k not in (200, 429, 503)}
    print(
        f"clients={clients} duration={elapsed:.0f}s requests={len(results)} "
        f"by status={dict(statuses)}"
    )
    print(f"unexpected failures: {sum(failed.values())} {failed}")
    if lat:
        print(
            f"latency p50={statistics.median(lat):.2f}s p95={lat[int(0.95 * (len(lat) - 1))]:.2f}s"
        )
    print(f"generated tokens/s={sum(r[2] for r in ok) / elapsed:.1f}")
    warm = [m for t, m in memory if t >= min(30.0, seconds / 3)]
    if warm:
        print(
            f"server RSS MiB: after warm-up={warm[0]:.0f} end={warm[-1]:.0f} "
            f"max={max(warm):.0f} (end/warm-up ratio {warm[-1] / warm[0]:.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    with Server() as server:
        asyncio.run(run(server, args.clients, args.seconds, args.max_tokens))


if __name__ == "__main__":
    main()
