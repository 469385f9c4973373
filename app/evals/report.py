"""Builds the evaluation report from per-example outcomes: accuracy with intervals, cost,
latency, paired significance, and a plain recommendation."""

from dataclasses import dataclass
from itertools import combinations
from typing import Any

from app.evals.stats import (
    examples_to_decide,
    mcnemar_exact,
    paired_difference_interval,
    percentile,
    wilson_interval,
)

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
    # The concrete variant that answered (for an alias: its pick for this example).
    model: str | None = None


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


# A cheaper variant is recommended over the most accurate one only when the data show, at
# one-sided 95% confidence, that its accuracy is at most MARGIN below (non-inferiority); a
# small sample alone never earns a weaker variant the recommendation.
MARGIN = 0.05
ONE_SIDED_95 = 1.644854


def compare(first: list[Outcome], second: list[Outcome]) -> dict[str, Any]:
    """First against second on the same examples: the accuracy difference with its
    two-sided 90% interval (each side a one-sided 95% bound), and the verdict on the
    margin: within_margin, worse (by more than the margin) or undecided."""
    pairs = list(zip(first, second, strict=True))
    counts = (
        sum(x.correct and y.correct for x, y in pairs),
        sum(x.correct and not y.correct for x, y in pairs),
        sum(y.correct and not x.correct for x, y in pairs),
        sum(not x.correct and not y.correct for x, y in pairs),
    )
    diff, low, high = paired_difference_interval(*counts, ONE_SIDED_95)
    if low > -MARGIN:
        verdict = "within_margin"
    elif high < -MARGIN:
        verdict = "worse"
    else:
        verdict = "undecided"
    needed = examples_to_decide(counts, MARGIN, ONE_SIDED_95) if verdict == "undecided" else None
    return {
        "difference": diff,
        "lower": low,
        "upper": high,
        "verdict": verdict,
        "examples_needed": needed,
    }


def recommend(
    summaries: dict[str, dict[str, Any]], outcomes: dict[str, list[Outcome]]
) -> dict[str, Any]:
    """The most accurate variant, or the cheapest one (fewer prompt tokens per request, then
    lower latency) shown to be within MARGIN of it. When a cheaper variant may or may not be
    within the margin, the recommendation says so (`decided: false`), names how many
    examples would settle it, and meanwhile recommends the most accurate one it can."""

    def cost(v: str) -> tuple[float, float]:
        return (summaries[v]["mean_prompt_tokens"], summaries[v]["latency_ms_p50"])

    best = min(summaries, key=lambda v: (-summaries[v]["accuracy"], *cost(v)))
    against = {v: compare(outcomes[v], outcomes[best]) for v in summaries if v != best}
    cheaper = sorted((v for v in against if cost(v) < cost(best)), key=cost)
    within = [v for v in cheaper if against[v]["verdict"] == "within_margin"]
    choice = within[0] if within else best
    open_ = [v for v in cheaper if cost(v) < cost(choice) and against[v]["verdict"] == "undecided"]

    def acc(v: str) -> str:
        return f"{summaries[v]['accuracy']:.2f}"

    s = summaries[choice]
    use = (
        f"use {choice}: accuracy {acc(choice)} (95% CI {s['ci95'][0]:.2f}-{s['ci95'][1]:.2f}), "
        f"{s['mean_prompt_tokens']:.0f} prompt tokens and {s['latency_ms_p50']:.0f} ms (p50) "
        "per request."
    )
    text = ""
    if open_:
        needed = [against[v]["examples_needed"] for v in open_]
        how_many = (
            f"about {max(needed)} examples would tell, if the answers keep the proportions "
            "seen so far"
            if all(needed)
            else "the observed difference sits on the margin, so more examples may not tell"
        )
        text = (
            "Not enough examples to decide whether "
            + ", ".join(f"{v} ({acc(v)}, {cost(v)[0]:.0f} prompt tokens)" for v in open_)
            + f" is within {MARGIN:.2f} of {best}'s accuracy ({acc(best)}): {how_many}. "
            + "Until then, "
        )
    text += use if text else use[0].upper() + use[1:]
    if choice != best:
        c = against[choice]
        text += (
            f" {best} scores {acc(best)} at {cost(best)[0]:.0f} prompt tokens; {choice} is at "
            f"most {max(0.0, -c['lower']):.2f} below it (one-sided 95% bound), within the "
            f"{MARGIN:.2f} margin."
        )
    worse = [v for v in against if against[v]["verdict"] == "worse"]
    if worse:
        text += (
            f" More than {MARGIN:.2f} below {best}: "
            + ", ".join(f"{v} ({acc(v)})" for v in worse)
            + "."
        )
    return {
        "variant": choice,
        "most_accurate": best,
        "decided": not open_,
        "margin": MARGIN,
        "examples_needed": max((against[v]["examples_needed"] or 0 for v in open_), default=None)
        or None,
        "against_most_accurate": against,
        "text": text,
    }


def build_report(
    names: list[str], examples: list[dict[str, str]], outcomes: dict[str, list[Outcome]]
) -> dict[str, Any]:
    summaries = {v: variant_summary(outcomes[v]) for v in names}
    split = {v for v in names if _is_split(v, outcomes[v])}
    for v in split:
        summaries[v]["targets"] = _by_target(outcomes[v])
    pairs = pairwise(names, outcomes)
    return {
        "variants": summaries,
        "pairwise": pairs,
        "recommendation": recommend(summaries, outcomes),
        "examples": [
            {
                "input": ex["input"],
                "expected": ex["expected"],
                "answers": {v: _answer(outcomes[v][i], v in split) for v in names},
            }
            for i, ex in enumerate(examples)
        ],
    }


def _is_split(name: str, outcomes: list[Outcome]) -> bool:
    """Whether the variant is an alias, whose examples concrete variants answered."""
    return any(o.model is not None and o.model != name for o in outcomes)


def _by_target(outcomes: list[Outcome]) -> dict[str, dict[str, Any]]:
    """An alias's examples per concrete variant that answered them."""
    groups: dict[str, list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault(o.model or "", []).append(o)
    return {
        model: {
            "n": len(group),
            "correct": sum(o.correct for o in group),
            "accuracy": sum(o.correct for o in group) / len(group),
        }
        for model, group in sorted(groups.items())
    }


def _answer(outcome: Outcome, split: bool) -> dict[str, Any]:
    answer: dict[str, Any] = {"answer": outcome.answer, "correct": outcome.correct}
    if split:
        answer["model"] = outcome.model  # the alias's pick for this example
    return answer
