"""The serving benchmark's in-process phases, each run by `run_phase` in a fresh process
(`python -m bench.in_process --phase NAME --work FILE`) so that its peak memory is its own:

  (b) naive: each request alone, peft `set_adapter` per request;
  (c) the limit: `model.generate` on the base model alone, in batches of the client count;
  (d) engine: time to first token of 4-shot template requests with and without the prefix
      cache, and memory per loaded adapter against its file size.

(b) and (c) are closed-loop simulations of the service's clients (bench.workload.closed_loop).
"""

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.memory import DeviceMemory, PeakMemory
from bench.workload import closed_loop, summary

ROOT = Path(__file__).resolve().parent.parent


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
                "-m",
                "bench.in_process",
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase", choices=sorted(PHASES), required=True)
    parser.add_argument("--work", type=Path, required=True, help="the workload, as JSON")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    work = json.loads(args.work.read_text())
    print(json.dumps(PHASES[args.phase](work, args.device)))


if __name__ == "__main__":
    main()
