"""`python -m bench.serve --structured`: the serving workload with every other request under a
JSON schema (response_format, strict) against all of it unconstrained, on one server; then
what a new schema costs (compiled in process, cold and cached; a 1-token request over HTTP
with a new schema against one with a schema already compiled)."""

import asyncio
import functools
import json
import statistics
import time

import httpx

from bench.workload import QUESTIONS, service_phase

ANSWER_SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "topic": {"enum": ["geography", "science", "language", "math", "other"]},
    },
    "required": ["answer", "confidence", "topic"],
    "additionalProperties": False,
}


def schema_format(schema: dict, name: str = "answer") -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def structured_phases(args, server, requests: list[dict], first: dict, tokenizer) -> None:
    """Half of the requests under a JSON schema against none, side by side on one server;
    then the cost of compiling a new schema."""
    run = functools.partial(
        service_phase,
        server.url,
        server.headers,
        clients=args.clients,
        max_tokens=args.max_tokens,
        pid=server.proc.pid,
        device=args.device,
    )
    half = [
        {**r, "response_format": schema_format(ANSWER_SCHEMA)} if i % 2 == 0 else r
        for i, r in enumerate(requests)
    ]
    constrained = asyncio.run(run(half))
    print(f"(j) half under JSON schema: {json.dumps(constrained)}", flush=True)
    again = asyncio.run(run(requests))
    print(f"(a') unconstrained again  : {json.dumps(again)}", flush=True)
    free = (first["tokens_per_s"] + again["tokens_per_s"]) / 2
    print(
        f"ratio: (j) / mean(a, a') tokens/s = {constrained['tokens_per_s'] / free:.3f} "
        "(target >= 0.9)",
        flush=True,
    )

    from app.engine.structured import Grammars, OutputConstraint

    started = time.perf_counter()
    grammars = Grammars(tokenizer, len(tokenizer), {tokenizer.eos_token_id})
    setup_ms = (time.perf_counter() - started) * 1000
    cold, cached = [], []
    for i in range(8):
        c = OutputConstraint.json_schema({**ANSWER_SCHEMA, "title": f"bench{i}"})
        t0 = time.perf_counter()
        grammars.compile(c)
        cold.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        grammars.compile(c)
        cached.append((time.perf_counter() - t0) * 1000)
    print(
        f"compile in process: tokenizer view {setup_ms:.0f} ms once; new schema median "
        f"{statistics.median(cold):.2f} ms, cached {statistics.median(cached):.4f} ms",
        flush=True,
    )

    def latency(schema_name: str) -> float:
        body = {
            "model": requests[0]["model"],
            "messages": [{"role": "user", "content": QUESTIONS[0]}],
            "max_tokens": 1,
            "temperature": 0,
            "response_format": schema_format({**ANSWER_SCHEMA, "title": schema_name}, name="probe"),
        }
        t0 = time.perf_counter()
        r = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=server.headers)
        r.raise_for_status()
        return (time.perf_counter() - t0) * 1000

    new = [latency(f"new{i}") for i in range(8)]
    repeated = [latency(f"new{i}") for i in range(8)]
    print(
        f"1-token request latency over HTTP, median of 8: new schema "
        f"{statistics.median(new):.1f} ms, same schema again {statistics.median(repeated):.1f} ms",
        flush=True,
    )
