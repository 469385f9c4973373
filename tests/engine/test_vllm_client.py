"""The vLLM request bodies for structured outputs and label scoring, and reading a scoring
answer (shapes as vLLM 0.32 answered them; tests/vllm runs them against a real server)."""

import pytest

from app.engine.sampling import SamplingParams
from app.engine.structured import OutputConstraint
from app.engine.vllm.client import (
    ServerDown,
    completion_body,
    scored_logprob,
    scoring_body,
)

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


@pytest.mark.parametrize(
    ("constraint", "field"),
    [
        (OutputConstraint.json_schema(SCHEMA), {"json": SCHEMA}),
        (OutputConstraint.json_object(), {"json": {"type": "object"}}),
        (OutputConstraint.choice(["yes", "no"]), {"choice": ["yes", "no"]}),
        (OutputConstraint.regex(r"\d+"), {"regex": r"\d+"}),
    ],
)
def test_constraint_becomes_structured_outputs(constraint, field) -> None:
    body = completion_body("m", [1, 2], SamplingParams(constraint=constraint), [0])
    assert body["structured_outputs"] == field


def test_free_text_sends_no_constraint() -> None:
    assert "structured_outputs" not in completion_body("m", [1], SamplingParams(), [0])


def test_scoring_body_forces_the_token() -> None:
    body = scoring_body("ft:x", [1, 2, 3], 42)
    assert body["prompt"] == [1, 2, 3] and body["allowed_token_ids"] == [42]
    assert body["max_tokens"] == 1 and body["logprobs"] == 0 and body["temperature"] == 0


def answer(ids: list[int], values: list[float | None]) -> dict:
    return {"choices": [{"token_ids": ids, "logprobs": {"token_logprobs": values}}]}


def test_scored_logprob_reads_the_forced_token() -> None:
    entry = scored_logprob(answer([42], [-1.5]), 42)
    assert (entry.token_id, entry.logprob) == (42, -1.5)


@pytest.mark.parametrize(
    "response",
    [
        {"choices": []},
        answer([7], [-1.0]),  # another token than the forced one
        answer([42], []),
        answer([42], [None]),
        {"choices": [{"token_ids": [42], "logprobs": None}]},
    ],
)
def test_a_malformed_scoring_answer_is_a_server_failure(response: dict) -> None:
    with pytest.raises(ServerDown):
        scored_logprob(response, 42)
