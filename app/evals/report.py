"""Builds the evaluation report from per-example outcomes: accuracy with intervals, cost,
latency, paired significance, and a plain recommendation."""

from dataclasses import dataclass
from itertools import combinations
from typing import Any

from app.evals.stats import mcnemar_exact, percentile, wilson_interval

SIGNIFICANCE = 0.05


@dataclass
class Outcome:
    """One variant's answer to one example."""

    answer: str | None  # None: the request failed
    correct: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    error: str | None = None
    # Under an output constraint (a template's default): whether the answer parses as it
    # asks (None: the variant has none).
    parses: bool | None = None


def variant_summary(outcomes: list[Outcome]) -> dict[str, Any]:
    n = len(outcomes)
    ok = [o for o in outcomes if o.answer is not None]
    correct = sum(o.correct for o in outcomes)
    low, high = wilson_interval(correct, n)
    latencies = [o.latency_ms for o in ok]
    return {
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else 0.0,
        "ci95": [low, high],
        "failures": n - len(ok),
        "mean_prompt_tokens": sum(o.prompt_tokens for o in ok) / len(ok) if ok else 0.0,
        "mean_completion_tokens": sum(o.completion_tokens for o in ok) / len(ok) if ok else 0.0,
        "latency_ms_p50": percentile(latencies, 50),
        "latency_ms_p95": percentile(latencies, 95),
        "parse_rate": parse_rate(outcomes),
    }


def parse_rate(outcomes: list[Outcome]) -> float | None:
    """Share of answers that parse under the variant's output constraint (failed requests
    count as not parsing); None when the variant has no constraint."""
    checked = [o for o in outcomes if o.parses is not None or o.answer is None]
    if not any(o.parses is not None for o in checked):
        return None
    return sum(bool(o.parses) for o in checked) / len(checked)


def pairwise(names: list[str], outcomes: dict[str, list[Outcome]]) -> list[dict[str, Any]]:
    rows = []
    for a, b in combinations(names, 2):
        only_a = sum(
            x.correct and not y.correct for x, y in zip(outcomes[a], outcomes[b], strict=True)
        )
        only_b = sum(
            y.correct and not x.correct for x, y in zip(outcomes[a], outcomes[b], strict=True)
        )
        n = len(outcomes[a])
        p = mcnemar_exact(only_a, only_b)
        rows.append(
            {
                "a": a,
                "b": b,
                "accuracy_difference": (only_a - only_b) / n if n else 0.0,
                "only_a_correct": only_a,
                "only_b_correct": only_b,
                "p_value": p,
                "significant": p < SIGNIFICANCE,
            }
        )
    return rows


def recommend(summaries: dict[str, dict[str, Any]], pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """The most accurate variant, unless a cheaper one is not significantly worse: then the
    cheaper one (fewer prompt tokens per request, then lower latency)."""
    best = max(summaries, key=lambda v: summaries[v]["accuracy"])

    def p_against_best(v: str) -> float:
        if v == best:
            return 1.0
        row = next(r for r in pairs if {r["a"], r["b"]} == {v, best})
        return row["p_value"]

    tied = [v for v in summaries if p_against_best(v) >= SIGNIFICANCE]
    choice = min(
        tied, key=lambda v: (summaries[v]["mean_prompt_tokens"], summaries[v]["latency_ms_p50"])
    )
    s = summaries[choice]
    text = (
        f"Use {choice}: accuracy {s['accuracy']:.2f} "
        f"(95% CI {s['ci95'][0]:.2f}-{s['ci95'][1]:.2f}), "
        f"{s['mean_prompt_tokens']:.0f} prompt tokens and "
        f"{s['latency_ms_p50']:.0f} ms (p50) per request."
    )
    if choice != best:
        b = summaries[best]
        text += (
            f" {best} scores {b['accuracy']:.2f}, not significantly better "
            f"(McNemar p={p_against_best(choice):.2f}), "
            f"at {b['mean_prompt_tokens']:.0f} prompt tokens."
        )
    others = [v for v in summaries if v != choice and v not in tied]
    if others:
        text += (
            " Significantly worse: "
            + ", ".join(f"{v} ({summaries[v]['accuracy']:.2f})" for v in others)
            + "."
        )
    return {"variant": choice, "most_accurate": best, "text": text}


def build_report(
    names: list[str], examples: list[dict[str, str]], outcomes: dict[str, list[Outcome]]
) -> dict[str, Any]:
    summaries = {v: variant_summary(outcomes[v]) for v in names}
    pairs = pairwise(names, outcomes)
    return {
        "variants": summaries,
        "pairwise": pairs,
        "recommendation": recommend(summaries, pairs),
        "examples": [
            {
                "input": ex["input"],
                "expected": ex["expected"],
                "answers": {
                    v: {"answer": outcomes[v][i].answer, "correct": outcomes[v][i].correct}
                    for v in names
                },
            }
            for i, ex in enumerate(examples)
        ],
    }
