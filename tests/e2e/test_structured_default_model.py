"""Structured outputs on the real default model: generated schemas yield valid JSON, and a
choice constraint turns a sentiment question into a label."""

import asyncio
import json
import random

import jsonschema
import pytest

from app.engine.engine import Engine
from app.engine.prompts import encode, render_chat
from app.engine.protocol import generate
from app.engine.sampling import SamplingParams
from app.engine.structured import OutputConstraint
from tests.engine.test_structured import random_schema


@pytest.fixture
def engine(default_engine: Engine) -> Engine:
    return default_engine  # loaded once per session (tests/conftest.py)


def chat_ids(engine: Engine, text: str) -> list[int]:
    return encode(
        engine.tokenizer, render_chat(engine.tokenizer, [{"role": "user", "content": text}])
    )


def test_generated_schemas_yield_valid_json(engine: Engine) -> None:
    rng = random.Random(7)
    schemas = [random_schema(rng) for _ in range(8)]
    ids = chat_ids(engine, "Describe a small shop as JSON.")

    async def run():
        handles = [
            engine.submit(
                ids,
                SamplingParams(
                    max_tokens=300, temperature=0.0, constraint=OutputConstraint.json_schema(s)
                ),
            )
            for s in schemas
        ]
        return await asyncio.gather(*(h.result() for h in handles))

    for schema, result in zip(schemas, asyncio.run(run()), strict=True):
        assert result.finish_reason == "stop", (schema, result.text)
        jsonschema.validate(json.loads(result.text), schema)


def test_choice_gives_a_label(engine: Engine) -> None:
    ids = chat_ids(
        engine, "Is the sentiment of this review positive or negative? Review: a wonderful film."
    )
    params = SamplingParams(
        max_tokens=5, temperature=0.0, constraint=OutputConstraint.choice(["positive", "negative"])
    )
    result = asyncio.run(generate(engine, ids, params))
    assert result.text in ("positive", "negative")
    assert result.finish_reason == "stop"
