"""Grader throughput (items/s), in process through `app.graders.service.grade`, on SST-2 texts.

Each grader is validated with `validate_grader` and run with `grade(grader, sample, item)` as
the grader endpoints and evaluations run it, one item after another ("sequential") and all
items at once under `asyncio.gather` ("gather"); beside it the bare work the grader wraps:

- string_check (ilike), text_similarity fuzzy_match and rouge_l: against the bare metric call
  in a loop (`string_check`, `similarity.similarity`), so the per-item cost of `grade` itself
  (rendering the templates, for text_similarity a hop to a worker thread) shows;
- cosine (all-MiniLM-L6-v2): against encoding the same texts in batches (`embed` of every
  answer and reference at once) and taking the dot products;
- python (bubblewrap sandbox): every item starts its own sandbox (bwrap + `python -I -S`);
  against the bare start of `python -I -S -c pass` without the sandbox;
- score_model on the service's engine (the default model, built by `build_engine` as the
  service builds it; `EngineJudge` as the graders router wires it): sequential against
  gather over the items (the engine batches the concurrent judge calls);
- the overhead of grading against the generations it grades: N answers generated
  concurrently on the same engine alone, against the same N each graded by string_check
  as it returns (alternating, `--rounds` each), and the grading of those N answers alone.

Answers and references: SST-2 sentences; an answer is the reference with every fourth word
dropped (so similarity scores spread over 0..1). Items cycle through the file when more are
asked for than it has. Sizes are what was run: nothing is extrapolated.

    .venv/bin/python -m bench.graders --items 10000 --cosine-items 1000 \\
        --python-items 200 --judge-items 64 --generate-items 32 --rounds 3
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The shared data sets sit beside the main checkout (../shared); a worktree is one level deeper.
SST2 = (
    next(
        (
            p
            for p in (ROOT.parent / "shared", ROOT.parent.parent / "shared")
            if (p / "datasets" / "sst2").is_dir()
        ),
        ROOT.parent / "shared",
    )
    / "datasets"
    / "sst2"
    / "train.jsonl"
)

STRING_CHECK = {
    "type": "string_check",
    "name": "label",
    "input": "{{sample.output_text}}",
    "reference": "{{item.label}}",
    "operation": "ilike",
}


def similarity_grader(metric: str) -> dict:
    return {
        "type": "text_similarity",
        "name": metric,
        "input": "{{sample.output_text}}",
        "reference": "{{item.text}}",
        "evaluation_metric": metric,
    }


PYTHON = {
    "type": "python",
    "name": "overlap",
    "source": (
        "def grade(sample, item):\n"
        "    answer = set(sample['output_text'].lower().split())\n"
        "    reference = set(item['text'].lower().split())\n"
        "    return len(answer & reference) / max(len(reference), 1)\n"
    ),
}


def judge_grader(model: str) -> dict:
    return {
        "type": "score_model",
        "name": "sentiment",
        "model": model,
        "input": [
            {
                "role": "system",
                "content": "Score from 0 to 10 how well the label fits the review's sentiment.",
            },
            {
                "role": "user",
                "content": "Review: {{item.text}}\nLabel: {{sample.output_text}}",
            },
        ],
        "range": [0, 10],
        "sampling_params": {"temperature": 0},
    }


def read_items(path: Path, n: int) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [rows[i % len(rows)] for i in range(n)]


def shortened(text: str) -> str:
    """The text with every fourth word dropped: an answer that is near its reference."""
    return " ".join(w for i, w in enumerate(text.split()) if i % 4 != 3)


def text_cases(items: list[dict]) -> list[tuple[dict, dict]]:
    from app.graders.service import sample_from_text

    return [(sample_from_text(shortened(it["text"])), it) for it in items]


def label_cases(items: list[dict]) -> list[tuple[dict, dict]]:
    """Samples that are a label guess: every third one wrong, so scores are not all equal."""
    from app.graders.service import sample_from_text

    flip = {"positive": "negative", "negative": "positive"}
    return [
        (sample_from_text(it["label"] if i % 3 else flip[it["label"]]), it)
        for i, it in enumerate(items)
    ]


class Table:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, grader: str, mode: str, n: int, seconds: float, **extra: Any) -> dict:
        row = {
            "grader": grader,
            "mode": mode,
            "items": n,
            "s": round(seconds, 3),
            "items_per_s": round(n / seconds, 1) if seconds > 0 else float("inf"),
            "ms_per_item": round(1000 * seconds / n, 3),
            **extra,
        }
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        return row

    def print(self) -> None:
        print("\n| grader | mode | items | s | items/s | ms/item |")
        print("|---|---|---|---|---|---|")
        for r in self.rows:
            print(
                f"| {r['grader']} | {r['mode']} | {r['items']} | {r['s']} | "
                f"{r['items_per_s']} | {r['ms_per_item']} |"
            )


async def timed(make: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await make()
    return time.perf_counter() - started, result


async def sequential(grader, cases, judge=None) -> list:
    from app.graders.service import grade

    return [await grade(grader, sample, item, judge) for sample, item in cases]


async def gathered(grader, cases, judge=None) -> list:
    from app.graders.service import grade

    return await asyncio.gather(*(grade(grader, sample, item, judge) for sample, item in cases))


def check_scores(name: str, graded: list) -> None:
    """Every item graded without an error flag (a failing grader would measure nothing)."""
    failed = [g for g in graded if g.errors.any()]
    if failed:
        raise SystemExit(f"{name}: {len(failed)} items graded with errors, e.g. {failed[0]}")


async def grade_both_ways(table: Table, label: str, grader, cases, warmup: int) -> list:
    """`grade` over `cases` one at a time, then all under one gather, each timed into the
    table under `label`; the sequential run's results, checked free of errors."""
    await sequential(grader, cases[:warmup])
    seconds, graded = await timed(lambda: sequential(grader, cases))
    check_scores(label, graded)
    table.add(label, "grade, sequential", len(cases), seconds)
    seconds, _ = await timed(lambda: gathered(grader, cases))
    table.add(label, "grade, gather", len(cases), seconds)
    return graded


def error_count(graded: list) -> int:
    return sum(g.errors.any() for g in graded)


async def cheap(table: Table, items: list[dict], warmup: int) -> None:
    from app.graders import similarity
    from app.graders.service import validate_grader
    from app.graders.string_check import string_check

    n = len(items)
    labels, texts = label_cases(items), text_cases(items)
    grader = validate_grader(STRING_CHECK)
    graded = await grade_both_ways(table, "string_check ilike", grader, labels, warmup)
    started = time.perf_counter()
    bare = [string_check("ilike", s["output_text"], it["label"]) for s, it in labels]
    table.add("string_check ilike", "bare function", n, time.perf_counter() - started)
    assert bare == [g.score for g in graded]
    print(f"string_check: mean score {statistics.fmean(bare):.3f}", flush=True)

    for metric in ("fuzzy_match", "rouge_l"):
        grader = validate_grader(similarity_grader(metric))
        graded = await grade_both_ways(table, f"text_similarity {metric}", grader, texts, warmup)
        started = time.perf_counter()
        bare = [similarity.similarity(metric, s["output_text"], it["text"]) for s, it in texts]
        table.add(f"text_similarity {metric}", "bare metric", n, time.perf_counter() - started)
        assert bare == [g.score for g in graded]
        print(f"{metric}: mean score {statistics.fmean(bare):.3f}", flush=True)


async def cosine(table: Table, items: list[dict], warmup: int) -> None:
    import numpy as np

    from app.embeddings import embed
    from app.graders.service import validate_grader

    n = len(items)
    texts = text_cases(items)
    grader = validate_grader(similarity_grader("cosine"))
    # The warm-up loads the encoder.
    graded = await grade_both_ways(table, "text_similarity cosine", grader, texts, warmup)
    started = time.perf_counter()
    answers = embed([s["output_text"] for s, _ in texts])
    references = embed([it["text"] for _, it in texts])
    scores = np.einsum("ij,ij->i", answers, references)
    table.add("text_similarity cosine", "embed in batches of 32", n, time.perf_counter() - started)
    diff = float(np.max(np.abs(scores - np.array([g.score for g in graded]))))
    print(
        f"cosine: mean score {float(scores.mean()):.3f}; batched against per-item scores, "
        f"largest difference {diff:.2e} (padding in a batch moves float sums slightly)",
        flush=True,
    )


async def python(table: Table, items: list[dict], warmup: int) -> None:
    from app.graders.service import validate_grader

    n = len(items)
    texts = text_cases(items)
    grader = validate_grader(PYTHON)  # runs one trial sandbox
    await sequential(grader, texts[:warmup])
    seconds, graded = await timed(lambda: sequential(grader, texts))
    check_scores("python", graded)
    table.add("python (sandbox per item)", "grade, sequential", n, seconds)
    seconds, graded = await timed(lambda: gathered(grader, texts))
    check_scores("python", graded)
    workers = min(32, (os.cpu_count() or 1) + 4)
    table.add("python (sandbox per item)", f"grade, gather ({workers} threads)", n, seconds)
    started = time.perf_counter()
    for _ in range(n):
        subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], check=True)
    table.add("python -I -S -c pass", "bare start, no sandbox", n, time.perf_counter() - started)


def build_engine():
    from app.engine.factory import build_engine as build
    from app.settings import get_settings

    return build(get_settings())


async def judge(table: Table, engine, items: list[dict]) -> None:
    from sqlalchemy.orm import Session

    from app.graders.service import validate_grader
    from app.inference.judge import EngineJudge

    n = len(items)
    cases = label_cases(items)
    # The base model resolves without the database; the session is only closed by the judge.
    judge = EngineJudge(Session(), "bench", engine)
    grader = validate_grader(judge_grader(engine.name), judge)
    await sequential(grader, cases[:2], judge)  # the schema's grammar, the first forward
    seconds, seq = await timed(lambda: sequential(grader, cases, judge))
    usage = [u for g in seq for u in g.usage.values()]
    extra = {
        "prompt_tokens_mean": round(statistics.fmean(u.prompt_tokens for u in usage), 1),
        "completion_tokens_mean": round(statistics.fmean(u.completion_tokens for u in usage), 1),
        "graded_with_errors": error_count(seq),
    }
    first = table.add("score_model judge", "grade, sequential", n, seconds, **extra)
    seconds, par = await timed(lambda: gathered(grader, cases, judge))
    second = table.add(
        "score_model judge",
        f"grade, gather of {n}",
        n,
        seconds,
        graded_with_errors=error_count(par),
    )
    same = sum(a.score == b.score for a, b in zip(seq, par, strict=True))
    print(
        f"score_model: gather / sequential items/s = "
        f"{second['items_per_s'] / first['items_per_s']:.2f}; mean score "
        f"{statistics.fmean(g.score for g in seq):.2f}; same score in both runs "
        f"{same}/{n} (batched rows may round differently)",
        flush=True,
    )


async def generate(engine, variant, item: dict, max_tokens: int) -> str:
    from app.inference.prompting import prepare_chat
    from app.inference.serving_chat import create_chat_completion
    from app.protocol.chat import ChatCompletionRequest

    req = ChatCompletionRequest(
        model=variant.model,
        messages=[
            {
                "role": "user",
                "content": f"Review: {item['text']}\nIs this review positive or negative?",
            }
        ],
        max_completion_tokens=max_tokens,
        temperature=0,
    )
    prepared = prepare_chat(engine, variant, req)
    result = await create_chat_completion(engine, variant, req, prepared)
    return result.choices[0].message.content or ""


async def overhead(table: Table, engine, items: list[dict], max_tokens: int, rounds: int) -> None:
    from app.graders.service import grade, sample_from_text, validate_grader
    from app.routing.resolve import Variant

    n = len(items)
    variant = Variant(model=engine.name, kind="base")
    grader = validate_grader(STRING_CHECK)

    async def alone() -> list[str]:
        return await asyncio.gather(*(generate(engine, variant, it, max_tokens) for it in items))

    async def graded() -> list[float]:
        async def one(item: dict) -> float:
            text = await generate(engine, variant, item, max_tokens)
            return (await grade(grader, sample_from_text(text), item)).score

        return await asyncio.gather(*(one(it) for it in items))

    await alone()  # warm-up
    walls: dict[str, list[float]] = {"alone": [], "graded": []}
    answers: list[str] = []
    for r in range(rounds):
        for label in ("alone", "graded") if r % 2 == 0 else ("graded", "alone"):
            seconds, out = await timed(alone if label == "alone" else graded)
            walls[label].append(seconds)
            if label == "alone":
                answers = out
            print(f"generation round {r + 1} {label}: {seconds:.3f} s", flush=True)
    gen = statistics.median(walls["alone"])
    with_grading = statistics.median(walls["graded"])
    table.add(f"generation alone (max {max_tokens} tokens)", "gather, median", n, gen)
    table.add("generation + string_check", "gather, median", n, with_grading)
    cases = [(sample_from_text(a), it) for a, it in zip(answers, items, strict=True)]
    seconds, scored = await timed(lambda: sequential(grader, cases))
    table.add("string_check on those answers", "grade, sequential", n, seconds)
    print(
        f"overhead: (generation + grading) / generation wall = {with_grading / gen:.3f} "
        f"(rounds alone {[round(w, 2) for w in walls['alone']]}, graded "
        f"{[round(w, 2) for w in walls['graded']]}); grading alone is "
        f"{100 * seconds / gen:.4f} % of the generation's wall; answers containing the label: "
        f"{sum(g.score for g in scored):.0f}/{n}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=SST2, help="SST-2 jsonl (text, label)")
    parser.add_argument("--items", type=int, default=10000, help="string_check, fuzzy, rouge_l")
    parser.add_argument("--cosine-items", type=int, default=1000)
    parser.add_argument("--python-items", type=int, default=200)
    parser.add_argument("--judge-items", type=int, default=64)
    parser.add_argument("--generate-items", type=int, default=32)
    parser.add_argument("--generate-max-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="generation alone / graded")
    parser.add_argument("--warmup", type=int, default=20, help="items graded before timing")
    parser.add_argument(
        "--only",
        default="cheap,cosine,python,judge,overhead",
        help="comma-separated: cheap, cosine, python, judge, overhead",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    unknown = only - {"cheap", "cosine", "python", "judge", "overhead"}
    if unknown:
        parser.error(f"--only: unknown {sorted(unknown)}")

    import torch

    from app.settings import get_settings

    settings = get_settings()
    print(
        f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f} torch_threads="
        f"{torch.get_num_threads()} data={args.data.name} base={settings.base_model} "
        f"dtype={settings.dtype} max_batch_size={settings.max_batch_size}",
        flush=True,
    )
    table = Table()

    async def run() -> None:
        if "cheap" in only:
            await cheap(table, read_items(args.data, args.items), args.warmup)
        if "cosine" in only:
            await cosine(table, read_items(args.data, args.cosine_items), args.warmup)
        if "python" in only:
            await python(table, read_items(args.data, args.python_items), min(args.warmup, 3))
        if only & {"judge", "overhead"}:
            engine = build_engine()
            print(f"engine: {engine.name} load={os.getloadavg()[0]:.2f}", flush=True)
            try:
                if "judge" in only:
                    await judge(table, engine, read_items(args.data, args.judge_items))
                if "overhead" in only:
                    items = read_items(args.data, args.generate_items)
                    await overhead(table, engine, items, args.generate_max_tokens, args.rounds)
            finally:
                engine.stop()

    started = time.perf_counter()
    asyncio.run(run())
    table.print()
    print(f"\ntotal {time.perf_counter() - started:.0f} s, load={os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
