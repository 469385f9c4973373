"""ICL or fine-tuning? Measured on SST-2 through the API only.

Builds variants of the default model and evaluates them on the same held-out test
sentences with the service's own evaluation endpoint:
  - a zero-shot template (instructions only), free generation,
  - a 4-shot template whose examples are picked per request by similarity (similar_k),
  - the same two templates with a default output constraint `{"choice": ["positive",
    "negative"]}` (structured outputs: the answer is always one of the labels),
  - a LoRA adapter fine-tuned on a few hundred training sentences (--no-adapter: skipped).
Then, beside the evaluation, the two templates scored by label log-probabilities: per test
sentence one chat request with the choice and `logprobs: true`, the label with the higher
`label_logprobs` taken as the answer (paired McNemar against the same template under the
choice constraint).
Prints how long each took to become servable and the evaluation report.

    .venv/bin/python -m bench.decide --train 384 --test 200 --charts docs/img
    .venv/bin/python -m bench.decide --test 200 --no-adapter   # templates only
"""

import argparse
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from app.evals.metrics import label as label_match
from app.evals.stats import mcnemar_exact, percentile, wilson_interval
from bench.server import Server

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "sst2"
BASE = "smollm2-135m-instruct"
SYSTEM = (
    "You classify the sentiment of movie reviews. "
    "Answer with exactly one word: positive or negative."
)
LABELS = ["positive", "negative"]
CHOICE = {"choice": LABELS}


def read(split: str, data: Path = DATA) -> list[dict]:
    with (data / f"{split}.jsonl").open() as fh:
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


def start_job(http: httpx.Client, train: list[dict], seed: int) -> str:
    train_file = upload(http, "sst2-train.jsonl", chat_jsonl(train), "fine-tune")
    job = http.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": BASE,
            "training_file": train_file,
            "suffix": "sst2",
            "seed": seed,
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
    return job.json()["id"]


def by_label_logprobs(
    http: httpx.Client, model: str, test: list[dict], clients: int
) -> list[tuple[str, float, int]]:
    """Per test sentence: (the label with the higher label_logprobs, latency ms, prompt
    tokens), from one chat request each, `clients` at a time."""

    def one(row: dict) -> tuple[str, float, int]:
        t = time.monotonic()
        r = http.post(
            "/v1/chat/completions",
            json={
                "model": model,
                "messages": [{"role": "user", "content": row["text"]}],
                "structured_outputs": CHOICE,
                "logprobs": True,
                "max_tokens": 3,
                "temperature": 0,
            },
        )
        r.raise_for_status()
        body = r.json()
        scores = body["choices"][0]["label_logprobs"]
        return (
            max(scores, key=scores.get),
            (time.monotonic() - t) * 1000,
            body["usage"]["prompt_tokens"],
        )

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, test))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=384)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--shots-pool", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--charts", type=Path, help="folder to save the job's loss curve and the eval chart in"
    )
    parser.add_argument("--data", type=Path, default=DATA, help="the SST-2 folder")
    parser.add_argument("--no-adapter", action="store_true", help="templates only, no training")
    parser.add_argument("--clients", type=int, default=16, help="label-logprob requests at once")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    train = rng.sample(read("train", args.data), args.train)
    test = rng.sample(read("test", args.data), args.test)

    with Server() as server:
        server.start_worker()
        http = httpx.Client(base_url=server.url, headers=server.headers, timeout=600)
        ready: dict[str, float] = {}

        # Fine-tuning first: it runs on the worker while the templates are made.
        started = time.monotonic()
        job_id = None if args.no_adapter else start_job(http, train, args.seed)
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
        # The same templates with a default output constraint: always one of the labels.
        for name, source in [("sst2-zero-choice", None), ("sst2-fewshot-choice", shots)]:
            t = time.monotonic()
            fields = {"name": name, "system_prompt": SYSTEM, "output_constraint": CHOICE}
            if source is not None:
                fields |= {"examples": source, "example_selection": {"rule": "similar_k", "k": 4}}
            http.post("/v1/templates", json=fields).raise_for_status()
            ready[f"tmpl:{name}"] = time.monotonic() - t

        variants = [
            "tmpl:sst2-zero",
            "tmpl:sst2-fewshot",
            "tmpl:sst2-zero-choice",
            "tmpl:sst2-fewshot-choice",
        ]
        if job_id is not None:
            job = wait(http, f"/v1/fine_tuning/jobs/{job_id}", "fine-tuning job")
            if job["status"] != "succeeded":
                raise SystemExit(f"fine-tuning failed: {job.get('error')}")
            adapter = job["fine_tuned_model"]
            ready[adapter] = time.monotonic() - started
            variants.append(adapter)
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
        scored: dict[str, list[tuple[str, float, int]]] = {}
        for template in ["tmpl:sst2-zero", "tmpl:sst2-fewshot"]:
            print(f"  label log-probabilities on {template}", flush=True)
            scored[template] = by_label_logprobs(http, template, test, args.clients)
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
    print_label_logprobs(report, test, scored)


def print_label_logprobs(
    report: dict, test: list[dict], scored: dict[str, list[tuple[str, float, int]]]
) -> None:
    print("\nScored by label log-probabilities (chat requests with the choice, logprobs: true):")
    print("| variant | accuracy (95% CI) | prompt tokens/request | p50 / p95 latency |")
    print("|---|---|---|---|")
    for template, rows in scored.items():
        right = [
            label_match(answer, row["label"])
            for (answer, _, _), row in zip(rows, test, strict=True)
        ]
        low, high = wilson_interval(sum(right), len(right))
        latencies = [ms for _, ms, _ in rows]
        print(
            f"| `{template}` + label logprobs | {sum(right) / len(right):.3f} "
            f"({low:.2f}-{high:.2f}) | {sum(p for _, _, p in rows) / len(rows):.0f} | "
            f"{percentile(latencies, 50) / 1000:.2f} s / {percentile(latencies, 95) / 1000:.2f} s |"
        )
        # Paired against the same template under the choice constraint (greedy answer).
        constrained = [ex["answers"][f"{template}-choice"]["correct"] for ex in report["examples"]]
        only_scored = sum(a and not b for a, b in zip(right, constrained, strict=True))
        only_choice = sum(b and not a for a, b in zip(right, constrained, strict=True))
        print(
            f"    vs {template}-choice: {only_scored} right only when scored, {only_choice} "
            f"only when generated, McNemar p={mcnemar_exact(only_scored, only_choice):.3g}"
        )


if __name__ == "__main__":
    main()
