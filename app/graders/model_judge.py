"""score_model and label_model: the judge's prompt, the structured answer it is held to, and
reading that answer. The call itself goes through a `Judge`, which the caller wires: the API
to the engine through the routing layer (router.py), evaluations later to their worker's.

The answer is constrained to JSON `{"result": <number in range>}` or `{"result": <one of
labels>}`, so a judge on adaptd's own models cannot answer something unreadable (a
max-tokens cut can still leave it unfinished: that is a parse error).
"""

import json
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.graders.schemas import LabelModelGrader, SamplingParams, ScoreModelGrader
from app.graders.templating import render

DEFAULT_MAX_TOKENS = 128  # {"result": ...} is a few tokens


@dataclass(frozen=True)
class JudgeRequest:
    model: str
    messages: list[dict[str, str]]
    schema: dict[str, Any]
    sampling: SamplingParams = field(default_factory=SamplingParams)

    @property
    def max_tokens(self) -> int:
        return self.sampling.max_completions_tokens or DEFAULT_MAX_TOKENS


@dataclass(frozen=True)
class JudgeAnswer:
    text: str
    model: str  # the variant that answered (an alias resolves to one)
    prompt_tokens: int = 0
    completion_tokens: int = 0


class JudgeFailed(Exception):
    """The judge could not answer (the model failed, timed out, the queue was full)."""


class Judge(Protocol):
    def check_model(self, model: str, param: str) -> None:
        """Raise a 400 naming `param` if `model` cannot judge (unknown to the tenant)."""
        ...

    async def __call__(self, request: JudgeRequest) -> JudgeAnswer:
        """The model's answer; raises JudgeFailed."""
        ...


def _text(message_content: Any) -> str:
    if isinstance(message_content, str):
        return message_content
    if isinstance(message_content, list):
        return "".join(part.text for part in message_content)
    return message_content.text


def judge_request(grader: ScoreModelGrader | LabelModelGrader, context: dict) -> JudgeRequest:
    """The rendered messages and the answer's schema (VariableError for a missing value)."""
    messages = [
        {"role": m.role, "content": render(_text(m.content), context)} for m in grader.input
    ]
    if isinstance(grader, ScoreModelGrader):
        low, high = grader.range
        result: dict[str, Any] = {"type": "number", "minimum": low, "maximum": high}
    else:
        result = {"type": "string", "enum": list(grader.labels)}
    schema = {
        "type": "object",
        "properties": {"result": result},
        "required": ["result"],
        "additionalProperties": False,
    }
    return JudgeRequest(grader.model, messages, schema, grader.sampling_params or SamplingParams())


def read_answer(grader: ScoreModelGrader | LabelModelGrader, text: str) -> float:
    """The reward from the judge's answer: the score clamped to `range`, or 1.0 for a passing
    label and 0.0 for another; ValueError if the answer is not what was asked."""
    try:
        result = json.loads(text)["result"]
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f'the judge\'s answer is not {{"result": ...}}: {text[:200]!r}') from exc
    if isinstance(grader, ScoreModelGrader):
        if isinstance(result, bool) or not isinstance(result, int | float):
            raise ValueError(f"the judge's result {result!r} is not a number")
        if not math.isfinite(result):
            raise ValueError(f"the judge's result {result!r} is not finite")
        low, high = grader.range
        return float(min(max(result, low), high))
    if result not in grader.labels:
        raise ValueError(f"the judge's label {result!r} is not one of {grader.labels}")
    return 1.0 if result in grader.passing_labels else 0.0
