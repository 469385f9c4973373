"""Each grader type on cases whose score is worked out by hand."""

import asyncio
import time
from typing import Any

import pytest

from app.graders.model_judge import JudgeAnswer, JudgeFailed, JudgeRequest
from app.graders.python_sandbox import unavailable_reason
from app.graders.service import run_grader, validate_grader

needs_bwrap = pytest.mark.skipif(unavailable_reason() is not None, reason="no bubblewrap here")


def run(grader: dict, sample: str, item: Any = None, judge: Any = None):
    return asyncio.run(run_grader(validate_grader(grader), sample, item, judge))


def check(operation: str, reference: str) -> dict:
    return {
        "type": "string_check",
        "name": "c",
        "input": "{{sample.output_text}}",
        "reference": reference,
        "operation": operation,
    }


@pytest.mark.parametrize(
    ("operation", "sample", "reference", "score"),
    [
        ("eq", "Paris", "Paris", 1.0),
        ("eq", "Paris", "paris", 0.0),
        ("ne", "Paris", "paris", 1.0),
        ("ne", "Paris", "Paris", 0.0),
        ("like", "The capital is Paris.", "Paris", 1.0),
        ("like", "The capital is PARIS.", "Paris", 0.0),
        ("ilike", "The capital is PARIS.", "Paris", 1.0),
        ("ilike", "The capital is Rome.", "Paris", 0.0),
    ],
)
def test_string_check(operation: str, sample: str, reference: str, score: float) -> None:
    result = run(check(operation, reference), sample)
    assert result.reward == score
    assert not result.metadata.errors.any()


def test_string_check_reads_item_and_output_json() -> None:
    grader = {**check("eq", "{{item.email}}"), "input": "{{sample.output_json.email}}"}
    assert run(grader, '{"email": "a@b.c"}', {"email": "a@b.c"}).reward == 1.0
    assert run(grader, '{"email": "x@b.c"}', {"email": "a@b.c"}).reward == 0.0


def test_answer_nested_past_json_depth_is_not_json() -> None:
    grader = {**check("eq", "x"), "input": "{{sample.output_json.a}}"}
    assert run(grader, "[" * 100_000).metadata.errors.sample_parse_error


def test_missing_variables_are_flagged_not_raised() -> None:
    grader = {**check("eq", "{{item.email}}"), "input": "{{sample.output_json.email}}"}
    not_json = run(grader, "not json", {"email": "a"})
    assert not_json.reward == 0.0 and not_json.metadata.errors.sample_parse_error
    no_field = run(grader, '{"email": "a"}', {"mail": "a"})
    assert no_field.reward == 0.0 and no_field.metadata.errors.invalid_variable_error


def similar(metric: str) -> dict:
    return {
        "type": "text_similarity",
        "name": "t",
        "input": "{{sample.output_text}}",
        "reference": "{{item.reference}}",
        "evaluation_metric": metric,
    }


@pytest.mark.parametrize(
    ("metric", "sample", "reference", "score"),
    [
        # Indel: 3 shared characters of 4 + 4: 2 * 3 / 8
        ("fuzzy_match", "abcd", "abce", 0.75),
        ("fuzzy_match", "same", "same", 1.0),
        # unigrams: 2 of 3 predicted in the reference (P 2/3), both reference words found
        # (R 1): F = 2 * (2/3) / (2/3 + 1) = 0.8
        ("rouge_1", "the cat sat", "the cat", 0.8),
        # bigrams: "the cat" of ("the cat", "cat sat"): P 1/2, R 1/1: F = 2/3
        ("rouge_2", "the cat sat", "the cat", 2 / 3),
        ("rouge_3", "the cat sat", "the cat", 0.0),  # the reference has no trigram
        # LCS "the sat" (2): P 2/3, R 2/2: F = 0.8
        ("rouge_l", "the cat sat", "the sat", 0.8),
        # 1..4-grams: hypothesis a b c ab bc abc, reference a b d ab bd abd: 3 shared of 6
        ("gleu", "a b c", "a b d", 0.5),
        ("bleu", "the quick brown fox jumps", "the quick brown fox jumps", 1.0),
        ("bleu", "alpha beta", "gamma delta", 0.0),
    ],
)
def test_text_similarity(metric: str, sample: str, reference: str, score: float) -> None:
    result = run(similar(metric), sample, {"reference": reference})
    assert result.reward == pytest.approx(score)
    assert not result.metadata.errors.any()


def test_cosine_on_the_shipped_encoder() -> None:
    same = run(
        similar("cosine"), "The cat sat on the mat.", {"reference": "The cat sat on the mat."}
    )
    assert same.reward == pytest.approx(1.0, abs=1e-5)
    near = run(
        similar("cosine"), "A cat is sitting on a mat.", {"reference": "The cat sat on the mat."}
    )
    far = run(
        similar("cosine"), "Quarterly revenue rose 4%.", {"reference": "The cat sat on the mat."}
    )
    assert near.reward > 0.6 > far.reward


def multi_of(formula: str, **graders: dict) -> dict:
    return {"type": "multi", "name": "m", "graders": graders, "calculate_output": formula}


def test_multi_combines_named_scores() -> None:
    grader = multi_of(
        "(name + email) / 2",
        name={
            **similar("fuzzy_match"),
            "input": "{{sample.output_json.name}}",
            "reference": "{{item.name}}",
        },
        email={**check("eq", "{{item.email}}"), "input": "{{sample.output_json.email}}"},
    )
    sample = '{"name": "abcd", "email": "a@b.c"}'
    result = run(grader, sample, {"name": "abce", "email": "a@b.c"})
    assert result.sub_rewards == {"name": 0.75, "email": 1.0}
    assert result.reward == pytest.approx((0.75 + 1.0) / 2)
    assert result.metadata.scores == result.sub_rewards


@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        ("b + 2 ^ 2", 5.0),  # ^ is power, above +
        ("max(a, b) - min(a, b)", 1.0),
        ("sqrt(4) * floor(1.7) + ceil(0.2) + abs(-1)", 4.0),
        ("log(exp(2))", 2.0),
        ("-a + b * 3", 3.0),
    ],
)
def test_multi_formulas(formula: str, expected: float) -> None:
    grader = multi_of(formula, a=check("eq", "x"), b=check("ne", "x"))
    result = run(grader, "y")  # a = 0, b = 1
    assert result.reward == pytest.approx(expected)


@pytest.mark.parametrize("formula", ["b / a", "9 ^ 999999 ^ 9", "log(a)", "exp(1000 * b)"])
def test_multi_formula_that_cannot_be_computed_is_flagged(formula: str) -> None:
    """Division by zero, overflow (in floats: at once, not a huge integer computed for
    minutes), a math domain error."""
    started = time.monotonic()
    result = run(multi_of(formula, a=check("eq", "x"), b=check("ne", "x")), "y")
    assert result.reward == 0.0 and result.metadata.errors.formula_parse_error
    assert time.monotonic() - started < 2


@needs_bwrap
def test_python_grader_scores_and_reads_sample_and_item() -> None:
    source = (
        "def grade(sample, item):\n"
        "    words = sample['output_text'].split()\n"
        "    return sum(w in item['keys'] for w in words) / len(item['keys'])\n"
    )
    grader = {"type": "python", "name": "p", "source": source, "image_tag": "2025-05-08"}
    result = run(grader, "red green blue", {"keys": ["red", "blue", "pink", "gold"]})
    assert result.reward == 0.5 and not result.metadata.errors.any()


@needs_bwrap
def test_python_grader_that_raises_is_flagged() -> None:
    grader = {"type": "python", "name": "p", "source": "def grade(s, i):\n    return 1 / 0\n"}
    result = run(grader, "x")
    assert result.reward == 0.0
    assert result.metadata.errors.python_grader_runtime_error
    assert "ZeroDivisionError" in result.metadata.errors.python_grader_runtime_error_details


class ScriptedJudge:
    """Stands in for the engine: answers a fixed text and records the request."""

    def __init__(self, answer: str | None) -> None:
        self.answer, self.requests = answer, []

    def check_model(self, model: str, param: str) -> None:
        pass

    async def __call__(self, request: JudgeRequest) -> JudgeAnswer:
        self.requests.append(request)
        if self.answer is None:
            raise JudgeFailed("the queue is full")
        return JudgeAnswer(self.answer, "judge-v1", prompt_tokens=10, completion_tokens=4)


SCORE = {
    "type": "score_model",
    "name": "s",
    "model": "judge",
    "range": [1, 5],
    "input": [
        {"role": "system", "content": "Grade it."},
        {
            "role": "user",
            "content": [{"type": "input_text", "text": "{{item.q}} -> {{sample.output_text}}"}],
        },
    ],
    "sampling_params": {"temperature": 0, "max_completions_tokens": 20},
}


@pytest.mark.parametrize(
    ("answer", "reward"),
    [('{"result": 4}', 4.0), ('{"result": 9}', 5.0), ('{"result": -3.5}', 1.0)],
)
def test_score_model_clamps_to_range(answer: str, reward: float) -> None:
    judge = ScriptedJudge(answer)
    result = run(SCORE, "Paris", {"q": "Capital of France?"}, judge)
    assert result.reward == reward
    request = judge.requests[0]
    assert request.messages[1] == {"role": "user", "content": "Capital of France? -> Paris"}
    assert request.schema["properties"]["result"] == {"type": "number", "minimum": 1, "maximum": 5}
    assert request.max_tokens == 20
    assert result.metadata.token_usage == 14
    assert result.metadata.sampled_model_name == "judge-v1"
    assert result.model_grader_token_usage_per_model["judge"].total_tokens == 14


@pytest.mark.parametrize("answer", ['{"result": "4"}', '{"res', '{"score": 1}'])
def test_score_model_unreadable_answer_is_a_parse_error(answer: str) -> None:
    result = run(SCORE, "Paris", {"q": "?"}, ScriptedJudge(answer))
    assert result.reward == 0.0 and result.metadata.errors.model_grader_parse_error


def test_judge_failure_is_a_server_error() -> None:
    result = run(SCORE, "Paris", {"q": "?"}, ScriptedJudge(None))
    errors = result.metadata.errors
    assert result.reward == 0.0 and errors.model_grader_server_error
    assert errors.model_grader_server_error_details == "the queue is full"


LABEL = {
    "type": "label_model",
    "name": "l",
    "model": "judge",
    "input": [{"role": "user", "content": "{{sample.output_text}}"}],
    "labels": ["good", "fair", "bad"],
    "passing_labels": ["good", "fair"],
}


@pytest.mark.parametrize(("label", "reward"), [("good", 1.0), ("fair", 1.0), ("bad", 0.0)])
def test_label_model_passes_on_passing_labels(label: str, reward: float) -> None:
    judge = ScriptedJudge(f'{{"result": "{label}"}}')
    assert run(LABEL, "x", {}, judge).reward == reward
    assert judge.requests[0].schema["properties"]["result"]["enum"] == ["good", "fair", "bad"]


def test_label_model_label_outside_the_list_is_a_parse_error() -> None:
    result = run(LABEL, "x", {}, ScriptedJudge('{"result": "great"}'))
    assert result.reward == 0.0 and result.metadata.errors.model_grader_parse_error
