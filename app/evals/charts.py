"""The decision picture of an evaluation: each variant's accuracy (with its 95% interval)
against what it costs per request in prompt tokens, its p50 latency in the label."""

from app.charts.svg import Point, scatter_chart
from app.evals.models import Evaluation


def accuracy_cost_svg(row: Evaluation) -> str:
    variants = (row.report or {}).get("variants", {})
    points = [
        Point(
            label=name,
            x=float(s["mean_prompt_tokens"]),
            y=float(s["accuracy"]),
            y_low=float(s["ci95"][0]),
            y_high=float(s["ci95"][1]),
            note=f"{s['accuracy']:.2f}, p50 {s['latency_ms_p50'] / 1000:.2f} s",
        )
        for name, s in variants.items()
    ]
    n = next(iter(variants.values()))["n"] if variants else 0
    return scatter_chart(
        points,
        title=f"Accuracy against cost, {n} examples ({row.id})",
        x_label="prompt tokens per request (mean)",
        y_label="accuracy (95% interval)",
        y_range=(0.0, 1.0),
        empty=f"No report yet: the evaluation is {row.status}.",
    )
