"""Malformed graders are 400s whose `param` points into the request."""

from typing import Any

import pytest

from app.errors import BadRequest
from app.graders.service import validate_grader

CHECK = {
    "type": "string_check",
    "name": "c",
    "input": "{{sample.output_text}}",
    "reference": "x",
    "operation": "eq",
}
SCORE = {
    "type": "score_model",
    "name": "s",
    "model": "judge",
    "input": [{"role": "user", "content": "Rate {{sample.output_text}}"}],
}
LABEL = {
    "type": "label_model",
    "name": "l",
    "model": "judge",
    "input": [{"role": "user", "content": "Label {{sample.output_text}}"}],
    "labels": ["good", "bad"],
    "passing_labels": ["good"],
}
PYTHON = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1.0\n"}


def multi(**graders: Any) -> dict:
    return {"type": "multi", "name": "m", "graders": graders, "calculate_output": "a"}


def refused(grader: Any) -> BadRequest:
    with pytest.raises(BadRequest) as exc:
        validate_grader(grader)
    return exc.value


@pytest.mark.parametrize(
    ("grader", "param", "code"),
    [
        ({**CHECK, "type": "regex_check"}, "grader.type", "invalid_grader"),
        ({**CHECK, "operation": "contains"}, "grader.operation", "invalid_grader"),
        ({**CHECK, "input": "{{ model.output }}"}, "grader.input", "invalid_template"),
        ({**CHECK, "reference": "{{ sample.text }}"}, "grader.reference", "invalid_template"),
        ({**SCORE, "range": [1, 0]}, "grader.range", "invalid_grader"),
        ({**SCORE, "range": [0, 1, 2]}, "grader.range", "invalid_grader"),
        (
            {**SCORE, "input": [{"role": "user", "content": "{{ item..x }}"}]},
            "grader.input.0.content",
            "invalid_template",
        ),
        ({**SCORE, "input": []}, "grader.input", "invalid_grader"),
        ({**LABEL, "labels": []}, "grader.labels", "invalid_grader"),
        (
            {**LABEL, "passing_labels": ["good", "great"]},
            "grader.passing_labels.1",
            "invalid_grader",
        ),
        (
            {**LABEL, "labels": ["a", "a"], "passing_labels": ["a"]},
            "grader.labels",
            "invalid_grader",
        ),
        (
            {**PYTHON, "source": "def score(sample, item):\n    return 1\n"},
            "grader.source",
            "invalid_grader",
        ),
        (
            {**PYTHON, "source": "def grade(sample):\n    return 1\n"},
            "grader.source",
            "invalid_grader",
        ),
        (
            {**PYTHON, "source": "def grade(sample, item) return 1"},
            "grader.source",
            "invalid_grader",
        ),
        (
            {**PYTHON, "source": "if True:\n    def grade(s, i):\n        return 1\n"},
            "grader.source",
            "invalid_grader",
        ),
        (multi(a={**CHECK, "type": "nope"}), "grader.graders.a.type", "invalid_grader"),
        (multi(a={**SCORE, "range": [2, 2]}), "grader.graders.a.range", "invalid_grader"),
        (multi(a={**LABEL, "labels": []}), "grader.graders.a.labels", "invalid_grader"),
        (multi(a=multi(b=CHECK)), "grader.graders.a.type", "invalid_grader"),
        (
            {**multi(a=CHECK), "calculate_output": "a +"},
            "grader.calculate_output",
            "invalid_formula",
        ),
        (
            {**multi(a=CHECK), "calculate_output": "a + b"},
            "grader.calculate_output",
            "invalid_formula",
        ),
        (
            {**multi(a=CHECK), "calculate_output": "__import__('os').system('x')"},
            "grader.calculate_output",
            "invalid_formula",
        ),
        (
            {**multi(a=CHECK), "calculate_output": "a.real"},
            "grader.calculate_output",
            "invalid_formula",
        ),
        (
            {**multi(a=CHECK), "calculate_output": "'a' * 9"},
            "grader.calculate_output",
            "invalid_formula",
        ),
        (
            {"type": "multi", "name": "m", "graders": {}, "calculate_output": "1"},
            "grader.graders",
            "invalid_grader",
        ),
        (
            {**CHECK, "type": "text_similarity", "evaluation_metric": "meteor"},
            "grader.evaluation_metric",
            "metric_unavailable",
        ),
        ("string_check", "grader", "invalid_grader"),
        (
            {
                **SCORE,
                "input": [{"role": "user", "content": {"type": "input_image", "image_url": "x"}}],
            },
            "grader.input.0.content",
            "invalid_grader",
        ),
        (
            {**SCORE, "input": [{"role": "user", "content": [{"type": "input_text"}]}]},
            "grader.input.0.content.0.text",
            "invalid_grader",
        ),
        (
            {**SCORE, "sampling_params": {"temperature": 3}},
            "grader.sampling_params.temperature",
            "invalid_grader",
        ),
    ],
)
def test_refused_with_param(grader: Any, param: str, code: str) -> None:
    error = refused(grader)
    assert (error.param, error.code) == (param, code), error.message
    assert error.status_code == 400


def test_range_message_names_the_values() -> None:
    assert "[1.0, 0.0]" in refused({**SCORE, "range": [1, 0]}).message


def test_meteor_names_the_metric() -> None:
    error = refused({**CHECK, "type": "text_similarity", "evaluation_metric": "meteor"})
    assert "meteor" in error.message and "WordNet" in error.message


def test_good_graders_pass() -> None:
    for grader in (
        CHECK,
        SCORE,
        LABEL,
        PYTHON,
        {**multi(a=CHECK, b=PYTHON), "calculate_output": "(a + b) / 2 ^ 1"},
    ):
        assert validate_grader(grader).name == grader["name"]


def test_openai_python_single_grader_form_of_multi() -> None:
    """openai-python types `graders` as one grader object; that form is taken too."""
    grader = validate_grader(
        {"type": "multi", "name": "m", "graders": CHECK, "calculate_output": "c * 2"}
    )
    assert list(grader.graders) == ["c"]


def test_name_defaults_to_the_type() -> None:
    """OpenAI's own python grader example leaves `name` out."""
    grader = validate_grader({"type": "python", "source": PYTHON["source"]})
    assert grader.name == "python"


def test_score_range_defaults_to_zero_one() -> None:
    assert validate_grader(SCORE).range == [0.0, 1.0]
    assert validate_grader({**SCORE, "range": None}).range == [0.0, 1.0]
