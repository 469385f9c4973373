"""Can one request starve the others? A 2-token request's latency on an idle service, then
while three hostile requests are in flight: a maximal template render, an 8k-token prompt and
an abandoned 128-sequence request (16 prompts x n=8 x 64 tokens, whose client gives up after
3 s). Also the API process's memory (RSS) before and after, and the engine's running rows
once the abandoned client has gone (from /metrics).

One run per PREFILL_CHUNK value given (0: every prompt prefilled in one forward, as before
chunked prefill), each on a fresh service with the default model:

    .venv/bin/python -m bench.starvation --chunks 512,0

Label rows (`label_run`): another tenant's 2-token request, idle and then while one client
sends 240-label `choice` requests with logprobs back to back, once per LABEL_ROWS_IN_FLIGHT
value given (240: every label row queued at once, as before):

    .venv/bin/python -m bench.starvation --chunks "" --label-windows 8,240

The grammar case (`grammar_run`), on its own: other tenants' p95 latency on the idle service
and while one tenant sends schemas that are slow to compile or too large:

    .venv/bin/python -m bench.starvation --grammar --idle-samples 10 --grammar-seconds 60
"""

import argparse
import json
import socket
import statistics
import threading
import time
from urllib.parse import urlsplit

import httpx

from app.evals.stats import percentile
from bench.server import Server

SHORT = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 2, "temperature": 0}
RENDER_SEPARATOR = 99_000  # the shape, 5000 items: ~495 MB if built whole
ABANDON_AFTER_S = 3.0
SENTENCES = (
    "The committee reviewed the quarterly figures and asked for a clearer breakdown of costs. "
    "Rain is expected in the north by evening, with lighter winds along the coast. "
    "She moved the meeting to Thursday so the whole team could attend in person. "
)


def long_prompt(tokens: int) -> str:
    """Plain text of about `tokens` tokens for the default model's tokenizer."""
    from transformers import AutoTokenizer

    from app.engine.loader import resolve_source
    from app.settings import get_settings

    settings = get_settings()
    tokenizer = AutoTokenizer.from_pretrained(
        resolve_source(settings.base_model, settings.model_cache)
    )
    ids = tokenizer(SENTENCES * (tokens // 40 + 1))["input_ids"][:tokens]
    return tokenizer.decode(ids)


def timed(client: httpx.Client, method: str, path: str, body: dict) -> tuple[float, int, str]:
    start = time.perf_counter()
    r = client.request(method, path, json=body)
    code = r.json().get("error", {}).get("code", "") if r.status_code >= 400 else ""
    return time.perf_counter() - start, r.status_code, code


def abandon(url: str, key: str, body: dict, after_s: float) -> None:
    """Send a whole-answer request on a raw socket and hang up before it is answered."""
    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall(
            (
                f"POST /v1/completions HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n"
            ).encode()
            + payload
        )
        time.sleep(after_s)


def running_rows(client: httpx.Client) -> float | None:
    text = client.get("/metrics").text
    for line in text.splitlines():
        if line.startswith("adaptd_engine_running_rows"):
            return float(line.split()[-1])
    return None


def one_run(chunk: int, prompt: str, idle_samples: int) -> dict:
    with Server({"PREFILL_CHUNK": str(chunk), "METRICS_SAMPLE_INTERVAL_S": "0.5"}) as server:
        client = httpx.Client(base_url=server.url, headers=server.headers, timeout=1800)
        model = client.get("/v1/models").json()["data"][0]["id"]
        short = {**SHORT, "model": model}
        template = client.post(
            "/v1/templates",
            json={
                "name": "wide",
                # 5 x 1000 items (a range() may yield at most 1000) joined by `sep`
                # (empty unless `sep` is sent: the save-time check renders the defaults).
                "instruction": "{% set xs = range(1000) | list %}{{ input }}"
                "{% if sep %}{{ (xs + xs + xs + xs + xs) | join(sep) }}{% endif %}",
                "variables": {"sep": ""},
            },
        )
        out: dict = {"prefill_chunk": chunk, "template_saved": template.status_code}
        if template.status_code != 201:
            out["template_error"] = template.json()["error"]["message"][:120]
        timed(client, "POST", "/v1/chat/completions", short)  # warm-up
        idle = [
            timed(client, "POST", "/v1/chat/completions", short)[0] for _ in range(idle_samples)
        ]
        out["rss_before_mib"] = round(server.rss_mib(), 1)

        results: dict[str, tuple[float, int, str]] = {}

        def run(name: str, path: str, body: dict) -> None:
            with httpx.Client(base_url=server.url, headers=server.headers, timeout=1800) as c:
                results[name] = timed(c, "POST", path, body)

        render_body = {"input": "x", "variables": {"sep": "x" * RENDER_SEPARATOR}}
        long_body = {"model": model, "prompt": prompt, "max_tokens": 8, "temperature": 0}
        wide = {"model": model, "prompt": ["Tell me a story."] * 16, "n": 8, "max_tokens": 64}
        threads = [
            threading.Thread(target=run, args=("render", "/v1/templates/wide/render", render_body)),
            threading.Thread(target=run, args=("long", "/v1/completions", long_body)),
            threading.Thread(target=abandon, args=(server.url, server.key, wide, ABANDON_AFTER_S)),
        ]
        start = time.perf_counter()
        for t in threads:
            t.start()
        threads[2].join()
        time.sleep(1.5)  # the abandoned request's rows should be gone by the next sample
        out["running_rows_after_abandon"] = running_rows(client)
        # The 2-token request, again and again, for as long as the 8k prompt is in flight.
        loaded: list[float] = []
        while threads[1].is_alive() or not loaded:
            loaded.append(timed(client, "POST", "/v1/chat/completions", short)[0])
        for t in threads:
            t.join()
        out["rss_after_mib"] = round(server.rss_mib(), 1)
        out["long_prompt"] = {"s": round(results["long"][0], 1), "status": results["long"][1]}
        out["render"] = {
            "s": round(results["render"][0], 1),
            "status": results["render"][1],
            "code": results["render"][2],
        }
        out["load_wall_s"] = round(time.perf_counter() - start, 1)
        out["idle_ms"] = round(statistics.median(idle) * 1000, 1)
        out["loaded_ms"] = {
            "n": len(loaded),
            "median": round(statistics.median(loaded) * 1000, 1),
            "max": round(max(loaded) * 1000, 1),
        }
        out["ratio_median"] = round(statistics.median(loaded) / statistics.median(idle), 1)
        out["ratio_max"] = round(max(loaded) / statistics.median(idle), 1)
        return out


# 240 labels (under MAX_LABEL_TOKENS for the default model's tokenizer); with n=8 the
# request's rows all fit the default queue (256) when every label row goes in at once.
LABELS = [f"c{i}" for i in range(240)]


def latency_summary(samples: list[float]) -> dict:
    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "p50_ms": round(percentile(samples, 50) * 1000, 1),
        "p95_ms": round(percentile(samples, 95) * 1000, 1),
        "max_ms": round(max(samples) * 1000, 1),
    }


def label_run(rows_in_flight: int, samples: int) -> dict:
    """Another tenant's 2-token request, on the idle service and then while one client sends
    the probe's kind of label request over and over (240 `choice` labels with logprobs, n=8:
    240 label rows each), with LABEL_ROWS_IN_FLIGHT at `rows_in_flight` (240 or more: every
    label row queued at once, as before the label rows went in a few at a time)."""
    env = {"LABEL_ROWS_IN_FLIGHT": str(rows_in_flight), "RATE_LIMIT_PER_MINUTE": "0"}
    with Server(env) as server:
        admin = httpx.Client(base_url=server.url, headers=server.headers, timeout=1800)
        model = admin.get("/v1/models").json()["data"][0]["id"]
        other_key = admin.post("/v1/admin/keys", json={"tenant": "other", "name": "bench"})
        other = httpx.Client(
            base_url=server.url,
            headers={"Authorization": f"Bearer {other_key.json()['key']}"},
            timeout=1800,
        )
        short = {**SHORT, "model": model}
        labelled = {
            "model": model,
            "messages": [{"role": "user", "content": "Which category is this review in?"}],
            "max_tokens": 2,
            "n": 8,
            "logprobs": True,
            "structured_outputs": {"choice": LABELS},
        }
        timed(other, "POST", "/v1/chat/completions", short)  # warm-up
        idle = [timed(other, "POST", "/v1/chat/completions", short) for _ in range(samples)]

        stop = threading.Event()
        label_requests: list[tuple[float, int, str]] = []

        def label_client() -> None:
            with httpx.Client(base_url=server.url, headers=server.headers, timeout=1800) as c:
                while not stop.is_set():
                    label_requests.append(timed(c, "POST", "/v1/chat/completions", labelled))

        thread = threading.Thread(target=label_client)
        thread.start()
        time.sleep(1.0)  # its first request is in the engine
        loaded = [timed(other, "POST", "/v1/chat/completions", short) for _ in range(samples)]
        stop.set()
        thread.join()

        def served(results: list[tuple[float, int, str]]) -> list[float]:
            return [s for s, status, _ in results if status == 200]

        out: dict = {"label_rows_in_flight": rows_in_flight}
        out["other_idle"] = latency_summary(served(idle))
        out["other_loaded"] = latency_summary(served(loaded))
        out["other_refused"] = [code for _, status, code in loaded if status != 200]
        if out["other_loaded"]["n"] and out["other_idle"]["n"]:
            ratio = out["other_loaded"]["p95_ms"] / out["other_idle"]["p95_ms"]
            out["p95_ratio"] = round(ratio, 1)
        out["label_requests"] = {
            "n": len(label_requests),
            "statuses": sorted({status for _, status, _ in label_requests}),
            "median_s": round(statistics.median(s for s, _, _ in label_requests), 1),
        }
        return out


# -- grammar case: one client sends huge and slow schemas -------------------------------------

# 46 bytes that take xgrammar minutes (a bounded repetition unrolled into 20,000 states), and
# the probe's 214 KB anyOf of 2,000 objects; plus a keyword the grammar would ignore.
SLOW_SCHEMA = {"type": "string", "pattern": "[a-z]{1,20000}"}
HUGE_SCHEMA = {
    "anyOf": [
        {
            "type": "object",
            "properties": {f"name_{i}": {"type": "string"}, f"n_{i}": {"type": "integer"}},
        }
        for i in range(2000)
    ]
}


def grammar_run(idle_samples: int, tenants: int, hostile_clients: int, duration_s: float) -> dict:
    """Other tenants' 2-token requests (each tenant its own key, one request at a time), p50 and
    p95 on the idle service, then for `duration_s` while one tenant's clients send schemas
    that are slow to compile (each new, so never cached) or too large, back to back."""
    from collections import Counter

    with Server() as server:
        admin = httpx.Client(base_url=server.url, headers=server.headers, timeout=1800)
        model = admin.get("/v1/models").json()["data"][0]["id"]
        short = {**SHORT, "model": model}

        def key(tenant: str) -> dict:
            r = admin.post("/v1/admin/keys", json={"tenant": tenant, "name": "bench"})
            return {"Authorization": f"Bearer {r.json()['key']}"}

        others = [key(f"tenant-{i}") for i in range(tenants)]
        hostile = key("hostile")
        timed(admin, "POST", "/v1/chat/completions", short)  # warm-up

        def sample(headers: dict, stop: threading.Event | None, count: int, out: list) -> None:
            with httpx.Client(base_url=server.url, headers=headers, timeout=1800) as c:
                while (stop is None and len(out) < count) or (
                    stop is not None and not stop.is_set()
                ):
                    out.append(timed(c, "POST", "/v1/chat/completions", short)[0])

        def phase(stop: threading.Event | None) -> tuple[list, list[list[float]]]:
            results: list[list[float]] = [[] for _ in others]
            threads = [
                threading.Thread(target=sample, args=(h, stop, idle_samples, r))
                for h, r in zip(others, results, strict=True)
            ]
            for t in threads:
                t.start()
            return threads, results

        threads, results = phase(None)
        for t in threads:
            t.join()
        idle = [x for r in results for x in r]

        outcomes: Counter = Counter()
        stop = threading.Event()

        def attack(index: int) -> None:
            with httpx.Client(base_url=server.url, headers=hostile, timeout=1800) as c:
                n = 0
                while not stop.is_set():
                    n += 1
                    schema = HUGE_SCHEMA if n % 4 == 0 else {**SLOW_SCHEMA, "title": f"{index}-{n}"}
                    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
                    s, status, code = timed(
                        c, "POST", "/v1/chat/completions", {**short, "response_format": fmt}
                    )
                    outcomes[f"{status} {code}".strip()] += 1

        attackers = [threading.Thread(target=attack, args=(i,)) for i in range(hostile_clients)]
        for t in attackers:
            t.start()
        time.sleep(2.0)  # the first slow compiles are running
        threads, results = phase(stop)
        time.sleep(duration_s)
        stop.set()
        for t in threads + attackers:
            t.join()
        loaded = [x for r in results for x in r]

        def pct(xs: list[float], q: float) -> float:
            return (
                round(statistics.quantiles(xs, n=100)[q - 1] * 1000, 1)
                if len(xs) > 1
                else round(xs[0] * 1000, 1)
            )

        return {
            "case": "grammar",
            "tenants": tenants,
            "hostile_clients": hostile_clients,
            "idle_ms": {"n": len(idle), "p50": pct(idle, 50), "p95": pct(idle, 95)},
            "loaded_ms": {"n": len(loaded), "p50": pct(loaded, 50), "p95": pct(loaded, 95)},
            "ratio_p95": round(pct(loaded, 95) / pct(idle, 95), 1),
            "hostile_outcomes": dict(outcomes),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", default="512,0", help="PREFILL_CHUNK values, one run each")
    parser.add_argument("--prompt-tokens", type=int, default=8000)
    parser.add_argument("--idle-samples", type=int, default=7)
    parser.add_argument(
        "--label-windows",
        default="",
        help="LABEL_ROWS_IN_FLIGHT values, one label-row run each (e.g. 8,240); empty: none",
    )
    parser.add_argument("--label-samples", type=int, default=10)
    parser.add_argument("--grammar", action="store_true", help="only the grammar case")
    parser.add_argument("--tenants", type=int, default=3)
    parser.add_argument("--hostile-clients", type=int, default=3)
    parser.add_argument("--grammar-seconds", type=float, default=60.0)
    args = parser.parse_args()
    if args.grammar:
        result = grammar_run(
            args.idle_samples, args.tenants, args.hostile_clients, args.grammar_seconds
        )
        print(json.dumps(result), flush=True)
        return
    chunks = [int(c) for c in args.chunks.split(",") if c]
    if chunks:
        prompt = long_prompt(args.prompt_tokens)
        print(f"long prompt: ~{args.prompt_tokens} tokens; short request: 2 tokens, chat, greedy")
    for chunk in chunks:
        print(json.dumps(one_run(chunk, prompt, args.idle_samples)), flush=True)
    windows = [int(w) for w in args.label_windows.split(",") if w]
    if windows:
        print(f"label rows: {len(LABELS)} labels, logprobs, n=8; other tenant: 2 tokens, chat")
    for window in windows:
        print(json.dumps(label_run(window, args.label_samples)), flush=True)


if __name__ == "__main__":
    main()
