import math

import pytest

from app.evals.metrics import contains, exact, label, normalise_label
from app.evals.report import Outcome, build_report
from app.evals.stats import (
    mcnemar_exact,
    paired_difference_interval,
    percentile,
    wilson_interval,
)


def test_wilson_interval_known_values() -> None:
    # 8/10: Wilson 95% is [0.490, 0.943] (textbook value).
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3)
    assert high == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and 0 < high < 0.2


def test_mcnemar_exact() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    # 10 discordant pairs all one way: p = 2 * 0.5**10.
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 1024)
    # b=3, c=7: 2 * P(X<=3), X~Bin(10, .5) = 2 * 176/1024.
    assert mcnemar_exact(3, 7) == pytest.approx(2 * 176 / 1024)
    assert mcnemar_exact(5, 5) == 1.0


def test_percentile_matches_linear_interpolation() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10], 95) == 10
    assert percentile(list(range(101)), 95) == 95


def test_metrics() -> None:
    assert normalise_label("  Positive.\nbecause it is good") == "positive"
    assert label("POSITIVE!", "positive") and not label("negative", "positive")
    assert exact(" yes ", "yes") and not exact("Yes", "yes")
    assert contains("I think it is positive overall", "Positive")
    assert not contains("negative", "positive")


def outs(right: set[int], n: int, prompt: int = 10, lat: float = 10.0) -> list[Outcome]:
    return [Outcome("a" if i in right else "b", i in right, prompt, 1, lat) for i in range(n)]


def examples(n: int) -> list[dict[str, str]]:
    return [{"input": f"q{i}", "expected": "a"} for i in range(n)]


def test_report_numbers_and_recommendation() -> None:
    # "cheap" is right on 18, "costly" on 19 (one example more): not significantly
    # different, but 20 examples cannot show that cheap is within the margin either, so the
    # recommendation stays with the most accurate and says more examples are needed.
    # "bad" is right on 4: more than the margin below.
    outcomes = {
        "cheap": outs(set(range(18)), 20, 10, 50.0),
        "costly": outs(set(range(19)), 20, 80, 90.0),
        "bad": outs(set(range(4)), 20, 10, 40.0),
    }
    report = build_report(["cheap", "costly", "bad"], examples(20), outcomes)
    v = report["variants"]
    assert v["cheap"]["accuracy"] == 0.9 and v["costly"]["accuracy"] == 0.95
    assert v["cheap"]["mean_prompt_tokens"] == 10 and v["costly"]["mean_prompt_tokens"] == 80
    assert v["cheap"]["ci95"] == pytest.approx(list(wilson_interval(18, 20)))
    pair = next(p for p in report["pairwise"] if {p["a"], p["b"]} == {"cheap", "costly"})
    assert pair["only_a_correct"] + pair["only_b_correct"] == 1
    assert not pair["significant"]
    bad = next(p for p in report["pairwise"] if {p["a"], p["b"]} == {"cheap", "bad"})
    assert bad["significant"] and bad["p_value"] == pytest.approx(mcnemar_exact(14, 0))
    rec = report["recommendation"]
    assert rec["variant"] == "costly" and rec["most_accurate"] == "costly"
    assert rec["decided"] is False and rec["margin"] == 0.05
    assert rec["against_most_accurate"]["cheap"]["verdict"] == "undecided"
    assert rec["against_most_accurate"]["bad"]["verdict"] == "worse"
    assert rec["text"].startswith("Not enough examples to decide whether cheap")
    assert "bad (0.20)" in rec["text"]
    assert report["examples"][18]["answers"]["cheap"] == {"answer": "b", "correct": False}
    assert math.isclose(v["bad"]["latency_ms_p50"], 40.0)


def test_a_small_sample_never_earns_a_far_weaker_variant_the_recommendation() -> None:
    # The case from the field: 10 examples, the cheap variant 0.00, the costly one 0.50
    # (McNemar p = 0.06, "not significantly better").
    outcomes = {"zero": outs(set(), 10, 5), "half": outs(set(range(5)), 10, 50)}
    rec = build_report(["zero", "half"], examples(10), outcomes)["recommendation"]
    assert rec["variant"] == "half" and rec["decided"] is True
    assert rec["against_most_accurate"]["zero"]["verdict"] == "worse"
    assert rec["text"].startswith("Use half") and "zero (0.00)" in rec["text"]


def test_a_cheaper_variant_shown_within_the_margin_is_recommended() -> None:
    outcomes = {"cheap": outs(set(range(360)), 400, 10), "costly": outs(set(range(362)), 400, 80)}
    rec = build_report(["cheap", "costly"], examples(400), outcomes)["recommendation"]
    assert rec["variant"] == "cheap" and rec["most_accurate"] == "costly" and rec["decided"]
    c = rec["against_most_accurate"]["cheap"]
    assert c["verdict"] == "within_margin" and -0.05 < c["lower"] < c["difference"] < 0
    assert "within the 0.05 margin" in rec["text"]


def test_undecided_names_how_many_examples_would_tell() -> None:
    outcomes = {"cheap": outs(set(range(8)), 10, 10), "costly": outs(set(range(9)), 10, 80)}
    rec = build_report(["cheap", "costly"], examples(10), outcomes)["recommendation"]
    assert rec["variant"] == "costly" and rec["decided"] is False
    needed = rec["examples_needed"]
    assert needed is not None and needed > 10 and f"about {needed} examples" in rec["text"]
    # With that many examples in the same proportions, it is settled.
    k = -(-needed // 10)
    big = {
        "cheap": outs({i for i in range(10 * k) if i % 10 < 8}, 10 * k, 10),
        "costly": outs({i for i in range(10 * k) if i % 10 < 9}, 10 * k, 80),
    }
    rec = build_report(["cheap", "costly"], examples(10 * k), big)["recommendation"]
    assert rec["decided"] is True


def test_paired_interval_never_collapses_on_full_agreement() -> None:
    # Ten examples answered identically say little about how far apart the variants are.
    diff, low, high = paired_difference_interval(5, 0, 0, 5, 1.644854)
    assert diff == 0 and low < -0.05 and high > 0.05
    # It narrows with more examples and always holds the observed difference.
    wide = paired_difference_interval(30, 5, 10, 55, 1.644854)
    narrow = paired_difference_interval(300, 50, 100, 550, 1.644854)
    assert wide[1] < narrow[1] < narrow[0] == wide[0] < narrow[2] < wide[2]


def test_failures_count_as_wrong_and_are_reported() -> None:
    examples = [{"input": "x", "expected": "a"}] * 4
    outcomes = {"v": [Outcome("a", True, 5, 1, 10.0)] * 3 + [Outcome(None, False, error="boom")]}
    s = build_report(["v"], examples, outcomes)["variants"]["v"]
    assert s["failures"] == 1 and s["accuracy"] == 0.75 and s["mean_prompt_tokens"] == 5
