"""ICL or fine-tuning? Measured on SST-2 through the API only.

Builds three variants of the default model and evaluates them on the same held-out test
sentences with the service's own evaluation endpoint:
  - a zero-shot template (instructions only),
  - a 4-shot template whose examples are picked per request by similarity (similar_k),
  - a LoRA adapter fine-tuned on a few hundred training sentences.
Prints how long each took to become servable and the evaluation report.

    .venv/bin/python bench/decide.py --train 384 --test 200 --charts docs/img
"""

import argparse
import json
import random
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.server import Server  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "sst2"
BASE = "smollm2-135m-instruct"
SYSTEM = (
    "You classify the sentiment of movie reviews. "
    "Answer with exactly one word: positive or negative."
)


def read(split: str) -> list[dict]:
    with (DATA / f"{split}.jsonl").open() as fh:
        return [json.loads(line) for line in fh]


def chat_jsonl(rows: list[dict]) -> bytes:
    return "".join(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": r["text"]},
                    {"role": "assistant", "content": r["label"]},
                ]
            }
        )
        + "\n"
        for r in rows
    ).encode()


def upload(http: httpx.Client, name: str, data: bytes, purpose: str) -> str:
    r = http.post("/v1/files", files={"file": (name, data)}, data={"purpose": purpose})
    r.raise_for_status()
    return r.json()["id"]


def wait(http: httpx.Client, path: str, label: str) -> dict:
    last = ""
    while True:
        body = http.get(path).json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        if body["status"] != last:
            print(f"  {label}: {body['status']}", flush=True)
            last = body["status"]
        time.sleep(2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=384)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--shots-pool", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--charts", type=Path, help="folder to save the job's loss curve and the eval chart in"
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    train = rng.sample(read("train"), args.train)
    test = rng.sample(read("test"), args.test)

    with Server() as server:
        server.start_worker()
        http = httpx.Client(base_url=server.url, headers=server.headers, timeout=600)
        ready: dict[str, float] = {}

        # Fine-tuning first: it runs on the worker while the templates are made.
        started = time.monotonic()
        train_file = upload(http, "sst2-train.jsonl", chat_jsonl(train), "fine-tune")
        job = http.post(
            "/v1/fine_tuning/jobs",
            json={
                "model": BASE,
                "training_file": train_file,
                "suffix": "sst2",
                "seed": args.seed,
                "method": {
                    "type": "supervised",
                    "supervised": {
                        "hyperparameters": {
                            "n_epochs": 1,
                            "batch_size": 8,
                            "learning_rate_multiplier": 1.0,
                            "r": 8,
                            "alpha": 16,
                            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
                        }
                    },
                },
            },
        )
        job.raise_for_status()
        job_id = job.json()["id"]

        t = time.monotonic()
        r = http.post("/v1/templates", json={"name": "sst2-zero", "system_prompt": SYSTEM})
        r.raise_for_status()
        ready["tmpl:sst2-zero"] = time.monotonic() - t
        t = time.monotonic()
        shots = [{"input": x["text"], "output": x["label"]} for x in train[: args.shots_pool]]
        r = http.post(
            "/v1/templates",
            json={
                "name": "sst2-fewshot",
                "system_prompt": SYSTEM,
                "examples": shots,
                "example_selection": {"rule": "similar_k", "k": 4},
            },
        )
        r.raise_for_status()
        ready["tmpl:sst2-fewshot"] = time.monotonic() - t

        job = wait(http, f"/v1/fine_tuning/jobs/{job_id}", "fine-tuning job")
        if job["status"] != "succeeded":
            raise SystemExit(f"fine-tuning failed: {job.get('error')}")
        adapter = job["fine_tuned_model"]
        ready[adapter] = time.monotonic() - started

        variants = ["tmpl:sst2-zero", "tmpl:sst2-fewshot", adapter]
        eval_file = upload(http, "sst2-test.jsonl", chat_jsonl(test), "evals")
        t = time.monotonic()
        ev = http.post(
            "/v1/evals",
            json={
                "file_id": eval_file,
                "variants": variants,
                "metric": "label",
                "generation": {"max_tokens": 3, "temperature": 0},
            },
        )
        ev.raise_for_status()
        result = wait(http, f"/v1/evals/{ev.json()['id']}", "evaluation")
        if result["status"] != "succeeded":
            raise SystemExit(f"evaluation failed: {result.get('error')}")
        eval_s = time.monotonic() - t
        if args.charts:  # the service's own pictures of this run
            args.charts.mkdir(parents=True, exist_ok=True)
            for url, name in [
                (f"/v1/fine_tuning/jobs/{job_id}/loss.svg", "sst2-loss.svg"),
                (f"/v1/evals/{ev.json()['id']}/chart.svg", "sst2-decision.svg"),
            ]:
                (args.charts / name).write_text(http.get(url).raise_for_status().text)

    report = result["report"]
    print(
        f"\nSST-2: {args.train} training sentences, {args.test} test sentences, "
        f"default model {BASE}; evaluation took {eval_s:.0f} s\n"
    )
    print("| variant | accuracy (95% CI) | prompt tokens/request | p50 / p95 latency | ready in |")
    print("|---|---|---|---|---|")
    for v in variants:
        s = report["variants"][v]
        print(
            f"| `{v}` | {s['accuracy']:.3f} ({s['ci95'][0]:.2f}-{s['ci95'][1]:.2f}) | "
            f"{s['mean_prompt_tokens']:.0f} | {s['latency_ms_p50'] / 1000:.2f} s / "
            f"{s['latency_ms_p95'] / 1000:.2f} s | {ready[v]:.1f} s |"
        )
    print("\nPairwise (exact McNemar on the paired answers):")
    for p in report["pairwise"]:
        print(
            f"  {p['a']} vs {p['b']}: difference {p['accuracy_difference']:+.3f}, "
            f"p={p['p_value']:.3g}{' (significant)' if p['significant'] else ''}"
        )
    print(f"\nRecommendation: {report['recommendation']['text']}")


if __name__ == "__main__":
    main()
