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
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent

QUESTIONS = [
    "What is the capital of France?",
    "Name a fruit that is yellow.",
    "Say hello in Spanish.",
    "What is 2 plus 2?",
    "Give one word for happy.",
    "Which planet is closest to the sun?",
    "What color is the sky on a clear day?",
    "How many legs does a spider have?",
]

# --answers long: questions whose answers run to max_tokens, so decoding, where batching
# pays most, outweighs prefill.
LONG_QUESTIONS = [
    "Explain in a few sentences why the sky is blue.",
    "Describe how a bicycle works, step by step.",
    "Write a short story about a cat who learns to swim.",
    "Explain what a computer does when you press a key.",
    "Describe the water cycle in detail.",
    "Give five tips for learning a new language, with a sentence on each.",
    "Explain how plants make food from sunlight.",
    "Describe a day in the life of a lighthouse keeper.",
]

TEMPLATES = [
    {
        "name": "geo-tutor",
        "system_prompt": (
            "You are a patient geography tutor for secondary school students. Answer in one "
            "short sentence, name the place exactly, and never invent facts. If a question is "
            "not about geography, answer it briefly anyway, in the same plain style."
        ),
        "instruction": "Question: {{ input }}",
        "examples": [
            {"input": "What is the capital of Italy?", "output": "The capital of Italy is Rome."},
            {
                "input": "Which river flows through Cairo?",
                "output": "The Nile flows through Cairo.",
            },
            {"input": "What is the largest ocean?", "output": "The Pacific is the largest ocean."},
            {"input": "Where is Mount Fuji?", "output": "Mount Fuji is in Japan, near Tokyo."},
        ],
        "params": {"temperature": 0},
    },
    {
        "name": "support-bot",
        "system_prompt": (
            "You are the support assistant of a small online shop that sells books and games. "
            "Be friendly and concise, answer in at most two sentences, and offer to help "
            "further when the customer seems unsure."
        ),
        "instruction": "Customer: {{ input }}",
        "examples": [
            {"input": "Where is my order?", "output": "Your order ships within two days."},
            {"input": "Can I return a book?", "output": "Yes, returns are free for 30 days."},
            {"input": "Do you sell puzzles?", "output": "Yes, we have puzzles for all ages."},
            {"input": "How do I pay?", "output": "We accept cards and bank transfers."},
        ],
        "params": {"temperature": 0},
    },
]

N_ADAPTERS = 3


# -- helpers shared by the phases ----------------------------------------------------------
class PeakMemory:
    """Samples this process's (or another's) resident memory, and the CUDA allocator's peak."""

    def __init__(self, pid: int | None = None, device: str = "cpu") -> None:
        self.pid = pid or os.getpid()
        self.device = device
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, self._rss())
            time.sleep(0.02)

    def __enter__(self) -> "PeakMemory":
        if self.device.startswith("cuda") and self.pid == os.getpid():
            import torch

            torch.cuda.reset_peak_memory_stats()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> dict:
        out = {"peak_rss_mib": round(self.peak_rss / 2**20, 1)}
        if self.device.startswith("cuda") and self.pid == os.getpid():
            import torch

            out["peak_cuda_alloc_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return out


class DeviceMemory:
    """Peak device-wide GPU memory in use during a block, less what was in use before any
    phase started (this process's own CUDA context): covers the server and the phase
    processes alike, allocator caches and contexts included."""

    baseline = 0

    def __init__(self, device: str) -> None:
        self.enabled = device.startswith("cuda")
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def used() -> int:
        import torch

        free, total = torch.cuda.mem_get_info()
        return total - free

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.used())
            time.sleep(0.02)

    def __enter__(self) -> "DeviceMemory":
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()

    def report(self) -> dict:
        if not self.enabled:
            return {}
        return {"peak_gpu_used_mib": round((self.peak - self.baseline) / 2**20, 1)}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(tokens: int, wall: float, latencies: list[float], memory: dict) -> dict:
    return {
        "tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 1),
        "p50_s": round(statistics.median(latencies), 2),
        "p95_s": round(percentile(latencies, 0.95), 2),
        **memory,
    }


def closed_loop(durations: list[float], clients: int) -> list[float]:
    """Latencies of requests served one after another (FIFO) to `clients` clients, each
    sending its next request when its previous one returns: request k is sent when
    request k - clients finished."""
    finish: list[float] = []
    latencies = []
    clock = 0.0
    for k, duration in enumerate(durations):
        sent = finish[k - clients] if k >= clients else 0.0
        clock = max(clock, sent) + duration
        finish.append(clock)
        latencies.append(clock - sent)
    return latencies


def load_model(device: str):
    from app.engine.loader import load_base_model
    from app.settings import get_settings

    settings = get_settings()
    return load_base_model(settings.base_model, settings.model_cache, device)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


# -- (b) naive: one request at a time, set_adapter per request -----------------------------
def phase_naive(work: dict, device: str) -> dict:
    import torch
    from peft import PeftModel

    loaded = load_model(device)
    from app.engine.loader import eos_token_ids

    model = loaded.model
    eos = eos_token_ids(model, loaded.tokenizer)
    peft = None
    labels = {}  # peft adapter names: registry names may hold characters peft refuses
    for i, (name, path) in enumerate(work["adapters"].items()):
        labels[name] = f"adapter{i}"
        if peft is None:
            peft = PeftModel.from_pretrained(model, path, adapter_name=labels[name])
        else:
            peft.load_adapter(path, adapter_name=labels[name])
    peft.eval()

    @torch.inference_mode()
    def serve(ids: list[int], adapter: str | None) -> int:
        def decode(module) -> int:
            out = module(input_ids=torch.tensor([ids], device=device), logits_to_keep=1)
            n = 0
            while n < work["max_tokens"]:
                token = int(out.logits[0, -1].argmax())
                if token in eos:
                    break
                n += 1
                if n == work["max_tokens"]:
                    break
                step = torch.tensor([[token]], device=device)
                out = module(input_ids=step, cache=out.cache, logits_to_keep=1)
            return n

        if adapter is None:
            with peft.disable_adapter():
                return decode(peft)
        peft.set_adapter(labels[adapter])
        return decode(peft)

    serve(work["requests"][0]["ids"], None)  # warm-up, not timed
    durations, tokens = [], 0
    with PeakMemory(device=device) as memory:
        started = time.perf_counter()
        for req in work["requests"]:
            t0 = time.perf_counter()
            tokens += serve(req["ids"], req["adapter"])
            synchronize(device)
            durations.append(time.perf_counter() - t0)
        wall = time.perf_counter() - started
    return summary(tokens, wall, closed_loop(durations, work["clients"]), memory.report())


# -- (c) the limit: batched generate on the base model -------------------------------------
def phase_limit(work: dict, device: str) -> dict:
    import torch

    loaded = load_model(device)
    model, tok = loaded.model, loaded.tokenizer
    from app.engine.loader import eos_token_ids

    eos = eos_token_ids(model, tok)
    pad = tok.pad_token_id

    @torch.inference_mode()
    def batch(prompts: list[list[int]]) -> int:
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=work["max_tokens"],
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=sorted(eos),
        )
        generated = 0
        for row in out[:, width:].tolist():
            for token in row:
                if token in eos:
                    break
                generated += 1
        return generated

    prompts = [r["ids"] for r in work["requests"]]
    clients = work["clients"]
    batch(prompts[:clients])  # warm-up, not timed
    durations, tokens = [], 0
    with PeakMemory(device=device) as memory:
        started = time.perf_counter()
        for i in range(0, len(prompts), clients):
            t0 = time.perf_counter()
            tokens += batch(prompts[i : i + clients])
            synchronize(device)
            durations += [time.perf_counter() - t0] * len(prompts[i : i + clients])
        wall = time.perf_counter() - started
    # Each batch's rows all return when the batch ends; the next batch waits for it.
    return summary(tokens, wall, durations, memory.report())


# -- (d) time to first token with and without the prefix cache; adapter memory -------------
def phase_engine(work: dict, device: str) -> dict:
    from app.engine.adapters import AdapterRef
    from app.engine.engine import Engine, EngineConfig
    from app.engine.protocol import generate
    from app.engine.sampling import SamplingParams

    engine = Engine(load_model(device), EngineConfig(prefix_cache_entries=16))
    engine.start()
    one = SamplingParams(max_tokens=1, temperature=0.0)

    async def ttft(ids: list[int], prefix_len: int) -> float:
        t0 = time.perf_counter()
        await generate(engine, ids, one, prefix_len=prefix_len)
        return time.perf_counter() - t0

    async def measure() -> dict:
        cached, plain = [], []
        shots = work["few_shot"]
        for item in shots[:2]:  # warm-up: fills the prefix cache for both templates
            await ttft(item["ids"], item["prefix_len"])
            await ttft(item["ids"], 0)
        for item in shots:  # interleaved, so drift on a shared machine hits both alike
            cached.append(await ttft(item["ids"], item["prefix_len"]))
            plain.append(await ttft(item["ids"], 0))
        return {
            "prompt_tokens_mean": round(statistics.mean(len(s["ids"]) for s in shots), 1),
            "prefix_tokens_mean": round(statistics.mean(s["prefix_len"] for s in shots), 1),
            "ttft_cached_ms": round(1000 * statistics.median(cached), 1),
            "ttft_uncached_ms": round(1000 * statistics.median(plain), 1),
            "requests": len(shots),
        }

    result = asyncio.run(measure())

    async def load_adapters() -> list[dict]:
        rows = []
        for name, path in work["adapters"].items():
            ref = AdapterRef(name, Path(path))
            rss_before = PeakMemory()._rss()
            await generate(engine, work["requests"][0]["ids"], one, ref)
            rss_after = PeakMemory()._rss()
            file_bytes = (Path(path) / "adapter_model.safetensors").stat().st_size
            rows.append(
                {
                    "adapter": name,
                    "file_bytes": file_bytes,
                    "held_bytes": engine.adapters.nbytes(name),
                    "rss_delta_bytes": rss_after - rss_before,
                }
            )
        return rows

    result["adapters"] = asyncio.run(load_adapters())
    engine.stop()
    return result


PHASES = {"naive": phase_naive, "limit": phase_limit, "engine": phase_engine}


def run_phase(name: str, work_file: Path, device: str, env: dict) -> dict:
    """Each in-process phase runs in a fresh process, so peak memory is its own."""
    with DeviceMemory(device) as gpu:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--phase",
                name,
                "--work",
                str(work_file),
                "--device",
                device,
            ],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"phase {name} failed:\n{proc.stderr[-3000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), **gpu.report()}


# -- setup: adapters in the registry, templates through the API ----------------------------
def make_adapters(data_dir: Path, base_model: str) -> dict[str, str]:
    """Three LoRA adapters on the base model (random non-zero B, seeded), written into the
    registry the way the trainer does: files first, then the row."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from app.db import get_sessionmaker
    from app.engine.loader import model_name, resolve_source
    from app.ids import new_id
    from app.registry.models import Adapter
    from app.settings import get_settings

    settings = get_settings()
    source = resolve_source(settings.base_model, settings.model_cache)
    made: dict[str, str] = {}
    for i in range(N_ADAPTERS):
        base = AutoModelForCausalLM.from_pretrained(source)
        config = LoraConfig(
            r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
        )
        torch.manual_seed(10 + i)  # LoRA A's initialisation: the same adapters every run
        model = get_peft_model(base, config)
        generator = torch.Generator().manual_seed(10 + i)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:  # default init leaves B at zero: make the adapter count
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.01)
        job = new_id("ftjob-", 6)
        folder = settings.adapters_dir / job
        model.save_pretrained(str(folder))
        name = f"ft:{model_name(base_model)}:bench{i}:{job}"
        size = sum(f.stat().st_size for f in folder.iterdir())
        with get_sessionmaker()() as session:
            session.add(
                Adapter(
                    id=new_id("adapter_"),
                    tenant="default",
                    name=name,
                    job_id=job,
                    base_model=base_model,
                    path=job,
                    bytes=size,
                    manifest={},
                )
            )
            session.commit()
        made[name] = str(folder)
    return made


async def service_phase(
    url: str,
    headers: dict,
    requests: list[dict],
    clients: int,
    max_tokens: int,
    pid: int,
    device: str,
) -> dict:
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=httpx.Timeout(900)
    ) as c:

        async def one(req: dict) -> tuple[float, int]:
            body = {
                "model": req["model"],
                "messages": [{"role": "user", "content": req["question"]}],
                "max_tokens": max_tokens,
                "temperature": 0,
            }
            if req.get("response_format"):
                body["response_format"] = req["response_format"]
            t0 = time.perf_counter()
            r = await c.post("/v1/chat/completions", json=body)
            r.raise_for_status()
            return time.perf_counter() - t0, r.json()["usage"]["completion_tokens"]

        # Warm-up, not timed: one request per variant loads every adapter and prefix.
        for model in dict.fromkeys(r["model"] for r in requests):
            await one({"model": model, "question": QUESTIONS[0]})

        pending = list(requests)
        results: list[tuple[float, int]] = []

        async def client() -> None:
            while pending:
                results.append(await one(pending.pop(0)))

        with PeakMemory(pid=pid) as memory, DeviceMemory(device) as gpu:
            started = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(clients)))
            wall = time.perf_counter() - started
    memory_report = {**memory.report(), **gpu.report()}
    return summary(sum(t for _, t in results), wall, [lat for lat, _ in results], memory_report)


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


def orchestrate(args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="adaptd-serve-bench-"))
    os.environ["DATA_DIR"] = str(data_dir)
    os.environ.pop("DATABASE_URL", None)
    os.environ["RATE_LIMIT_PER_MINUTE"] = "0"
    os.environ["MAX_BATCH_SIZE"] = str(args.clients)
    os.environ["DEVICE"] = args.device
    if args.threads:  # every process (server and phases) gets the same CPU thread count
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    from app.settings import get_settings

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
    from app.engine.loader import model_name
    from app.engine.prompts import encode, render_chat
    from bench.server import Server

    if args.device.startswith("cuda"):
        DeviceMemory.baseline = DeviceMemory.used()
    base_name = model_name(settings.base_model)
    with Server(data_dir=data_dir) as server:
        adapters = make_adapters(data_dir, settings.base_model)
        c = httpx.Client(base_url=server.url, headers=server.headers, timeout=600)
        for body in TEMPLATES:
            r = c.post("/v1/templates", json=body)
            assert r.status_code == 201, r.text
        from transformers import AutoTokenizer

        from app.engine.loader import resolve_source

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
    parser.add_argument("--phase", choices=sorted(PHASES))
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    if args.phase:
        work = json.loads(args.work.read_text())
        print(json.dumps(PHASES[args.phase](work, args.device)))
        return
    if args.engine == "vllm":
        from bench import vllm_compare

        vllm_compare.run(args)
        return
    orchestrate(args)


if __name__ == "__main__":
    main()
