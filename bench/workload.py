"""The chat workload the serving benchmarks share (bench.serve, bench.vllm_compare,
bench.lora_overhead, bench.dtype, bench.steps): the questions, the two four-shot templates, the
random LoRA adapters written into the registry, the closed-loop clients that send it to a
service, and the summary of a run."""

import asyncio
import statistics
import time
from pathlib import Path

import httpx

from app.evals.stats import percentile
from bench.memory import DeviceMemory, PeakMemory

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


def summary(tokens: int, wall: float, latencies: list[float], memory: dict) -> dict:
    return {
        "tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 1),
        "p50_s": round(statistics.median(latencies), 2),
        "p95_s": round(percentile(latencies, 95), 2),
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
