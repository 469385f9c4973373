import math

import pytest

from app.evals.metrics import contains, exact, label, normalise_label
from app.evals.report import Outcome, build_report
from app.evals.stats import mcnemar_exact, percentile, wilson_interval


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


def test_report_numbers_and_recommendation() -> None:
    examples = [{"input": f"q{i}", "expected": "a"} for i in range(20)]

    # "cheap" is right on 18, "costly" on 19 (one example more), so no significant difference:
    # the cheaper variant is recommended. "bad" is right on 4: significantly worse.
    def outs(right: set[int], prompt: int, lat: float) -> list[Outcome]:
        return [Outcome("a" if i in right else "b", i in right, prompt, 1, lat) for i in range(20)]

    outcomes = {
        "cheap": outs(set(range(18)), 10, 50.0),
        "costly": outs(set(range(19)), 80, 90.0),
        "bad": outs(set(range(4)), 10, 40.0),
    }
    report = build_report(["cheap", "costly", "bad"], examples, outcomes)
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
    assert rec["variant"] == "cheap" and rec["most_accurate"] == "costly"
    assert "bad" in rec["text"]
    assert report["examples"][18]["answers"]["cheap"] == {"answer": "b", "correct": False}
    assert math.isclose(v["bad"]["latency_ms_p50"], 40.0)


def test_failures_count_as_wrong_and_are_reported() -> None:
    examples = [{"input": "x", "expected": "a"}] * 4
    outcomes = {"v": [Outcome("a", True, 5, 1, 10.0)] * 3 + [Outcome(None, False, error="boom")]}
    s = build_report(["v"], examples, outcomes)["variants"]["v"]
    assert s["failures"] == 1 and s["accuracy"] == 0.75 and s["mean_prompt_tokens"] == 5
