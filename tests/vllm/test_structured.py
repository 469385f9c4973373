"""Structured outputs on both engines: JSON schemas, choices and regexes, on the base model and
on an adapter, plain and streamed; label log-probabilities; and a bad constraint answered with
the same 400 by both, before anything reaches an engine's queue or a vLLM server."""

import asyncio
import json
import re
from typing import Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from app.engine.adapters import AdapterRef
from app.engine.errors import InvalidInput
from app.engine.prompts import encode, render_chat
from app.engine.protocol import generate
from app.engine.sampling import SamplingParams
from app.engine.structured import OutputConstraint
from app.settings import DEFAULT_BASE_MODEL
from tests.conftest import ADMIN_KEY

REVIEW = [{"role": "user", "content": "Review: what a great film! Is it positive or negative?"}]
SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"enum": ["positive", "negative"]},
        "stars": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["sentiment", "stars"],
    "additionalProperties": False,
}
LABELS = ["positive", "negative", "neutral"]
CODE = r"[A-Z]{3}-\d{2}"


class Verdict(BaseModel):
    sentiment: Literal["positive", "negative"]
    stars: int


def json_schema_format(schema: dict = SCHEMA) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}}


@pytest.fixture
def oai(live_server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key=ADMIN_KEY, max_retries=0)


def post_chat(client, **body):
    body = {"model": DEFAULT_BASE_MODEL, "messages": REVIEW, "max_tokens": 40, **body}
    return client.post("/v1/chat/completions", json=body)


def sse_text(response) -> str:
    text = ""
    for line in response.text.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:])["choices"]:
                text += choice.get("delta", {}).get("content") or choice.get("text") or ""
    return text


def test_parse_choice_and_regex_on_base(oai: openai.OpenAI) -> None:
    parsed = oai.chat.completions.parse(
        model=DEFAULT_BASE_MODEL,
        messages=REVIEW,
        response_format=Verdict,
        max_tokens=40,
        temperature=0,
    )
    assert parsed.choices[0].finish_reason == "stop"
    assert isinstance(parsed.choices[0].message.parsed, Verdict)
    label = oai.chat.completions.create(
        model=DEFAULT_BASE_MODEL,
        messages=REVIEW,
        max_tokens=8,
        temperature=0,
        extra_body={"structured_outputs": {"choice": LABELS}},
    )
    assert label.choices[0].message.content in LABELS
    code = oai.completions.create(
        model=DEFAULT_BASE_MODEL,
        prompt="Product code:",
        max_tokens=12,
        temperature=1.0,
        seed=4,
        n=2,
        extra_body={"structured_outputs": {"regex": CODE}},
    )
    assert [bool(re.fullmatch(CODE, c.text)) for c in code.choices] == [True, True]


def test_streamed_schema_joins_to_the_plain_answer(client) -> None:
    plain = post_chat(client, response_format=json_schema_format(), temperature=0)
    assert plain.status_code == 200, plain.text
    content = plain.json()["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(content), SCHEMA)
    streamed = post_chat(client, response_format=json_schema_format(), temperature=0, stream=True)
    assert streamed.status_code == 200
    assert sse_text(streamed) == content
    regex = client.post(
        "/v1/completions",
        json={
            "model": DEFAULT_BASE_MODEL,
            "prompt": "Product code:",
            "max_tokens": 12,
            "stream": True,
            "structured_outputs": {"regex": CODE},
        },
    )
    assert re.fullmatch(CODE, sse_text(regex))


def test_constraints_on_an_adapter(client, register_adapter) -> None:
    name = register_adapter("default", "structured")
    tuned = post_chat(client, model=name, response_format=json_schema_format(), temperature=0)
    assert tuned.status_code == 200, tuned.text
    assert tuned.headers["x-adaptd-variant"] == name
    jsonschema.validate(json.loads(tuned.json()["choices"][0]["message"]["content"]), SCHEMA)
    streamed = post_chat(
        client, model=name, structured_outputs={"choice": LABELS}, stream=True, n=2, seed=9
    )
    assert streamed.status_code == 200
    texts: dict[int, str] = {}
    for line in streamed.text.splitlines():
        if line.startswith("data: {"):
            for c in json.loads(line[6:])["choices"]:
                texts[c["index"]] = texts.get(c["index"], "") + (c["delta"].get("content") or "")
    assert sorted(texts) == [0, 1] and all(t in LABELS for t in texts.values())
    scored = post_chat(
        client, model=name, structured_outputs={"choice": LABELS}, logprobs=True, temperature=0
    )
    base = post_chat(client, structured_outputs={"choice": LABELS}, logprobs=True, temperature=0)
    tuned_labels = scored.json()["choices"][0]["label_logprobs"]
    assert set(tuned_labels) == set(LABELS)
    assert tuned_labels != base.json()["choices"][0]["label_logprobs"]  # the adapter's own


def test_label_logprobs(client) -> None:
    r = post_chat(client, structured_outputs={"choice": LABELS}, logprobs=True, temperature=0)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    labels = choice["label_logprobs"]
    assert set(labels) == set(LABELS) and all(v < 0 for v in labels.values())
    # The answer is a label; not always the best-scored one: the grammar also allows a label
    # spelt in smaller tokens, and greedy may start down one of those.
    assert choice["message"]["content"] in LABELS
    completions = client.post(
        "/v1/completions",
        json={
            "model": DEFAULT_BASE_MODEL,
            "prompt": ["A great film. Sentiment:", "A dreadful film. Sentiment:"],
            "max_tokens": 4,
            "logprobs": 0,
            "structured_outputs": {"choice": LABELS},
        },
    ).json()["choices"]
    assert [set(c["label_logprobs"]) for c in completions] == [set(LABELS)] * 2
    assert completions[0]["label_logprobs"] != completions[1]["label_logprobs"]
    # The label rows count in usage alike on both engines: each its prompt and its label.
    tokenizer = client.app.state.engine.tokenizer
    label_tokens = sum(len(tokenizer.encode(x, add_special_tokens=False)) for x in LABELS)
    usage = r.json()["usage"]
    prompt = len(chat_ids(client.app.state.engine, REVIEW[0]["content"]))
    assert usage["prompt_tokens"] == prompt * (1 + len(LABELS))
    answer = len(choice["logprobs"]["content"])
    assert usage["completion_tokens"] == answer + label_tokens


def test_label_work_over_the_bound_is_refused_alike(client) -> None:
    """16 prompts x 100 labels: a 400 before anything reaches the engine, on both engines."""
    r = client.post(
        "/v1/completions",
        json={
            "model": DEFAULT_BASE_MODEL,
            "prompt": [f"Review {i}. Sentiment:" for i in range(16)],
            "max_tokens": 1,
            "logprobs": 0,
            "structured_outputs": {"choice": [f"label {i}" for i in range(100)]},
        },
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["code"], error["param"]) == ("too_many_label_tokens", "structured_outputs.choice")


def chat_ids(engine, text: str) -> list[int]:
    return encode(
        engine.tokenizer, render_chat(engine.tokenizer, [{"role": "user", "content": text}])
    )


def test_engines_give_the_same_constrained_tokens(local_engine, vllm_engine) -> None:
    """Greedy under each kind of constraint: token for token what the built-in engine gives
    (both run xgrammar on the same spec, with compact JSON)."""
    ids = chat_ids(local_engine, REVIEW[0]["content"])
    cases = [
        OutputConstraint.json_schema(SCHEMA),
        OutputConstraint.choice(LABELS),
        OutputConstraint.regex(CODE),
    ]
    for constraint in cases:
        params = SamplingParams(max_tokens=40, temperature=0, constraint=constraint)
        ours = asyncio.run(generate(local_engine, ids, params))
        theirs = asyncio.run(generate(vllm_engine, ids, params))
        assert theirs.token_ids == ours.token_ids, constraint
        assert (theirs.text, theirs.finish_reason) == (ours.text, ours.finish_reason)
    cut = SamplingParams(max_tokens=3, temperature=0, constraint=cases[0])
    assert asyncio.run(generate(vllm_engine, ids, cut)).finish_reason == "length"


def test_engines_score_labels_alike(local_engine, vllm_engine, peft_adapter_files) -> None:
    """Forced rows: each label's tokens scored under the same prompt give the same figures on
    both engines, on the base model and on an adapter, while other rows generate beside them
    (vLLM's prompt_logprobs with LoRA brought its engine down: not used)."""
    ids = chat_ids(local_engine, REVIEW[0]["content"])
    adapter = AdapterRef("ft:smollm2-135m-instruct:scored:job1", peft_adapter_files)

    async def scores(engine, variant: AdapterRef | None) -> list[list[float]]:
        beside = engine.submit(ids, SamplingParams(max_tokens=8, temperature=0), variant)
        out = []
        for label in [*LABELS, "a mixed review"]:
            tokens = engine.tokenizer.encode(label, add_special_tokens=False)
            params = SamplingParams(max_tokens=len(tokens), temperature=0, logprobs=0)
            result = await engine.submit(ids, params, variant, forced_tokens=tokens).result()
            assert list(result.token_ids) == tokens
            out.append([e.logprob for e in result.logprobs])
        assert (await beside.result()).completion_tokens > 0
        return out

    for variant in (None, adapter):
        ours = asyncio.run(scores(local_engine, variant))
        theirs = asyncio.run(scores(vllm_engine, variant))
        assert [len(s) for s in theirs] == [len(s) for s in ours]
        for a, b in zip(theirs, ours, strict=True):
            assert a == pytest.approx(b, abs=1e-3), variant
    plain = asyncio.run(scores(vllm_engine, None))
    assert plain != asyncio.run(scores(vllm_engine, adapter))  # the adapter's own figures


BAD = [
    (OutputConstraint.json_schema({"type": "nonsense"}, "response_format.json_schema.schema")),
    (OutputConstraint.regex("[^\\s\\S]", "structured_outputs.regex")),
    (OutputConstraint.regex("(unclosed", "structured_outputs.regex")),
]


def test_bad_constraints_are_refused_alike(local_engine, vllm_engine) -> None:
    for constraint in BAD:
        errors = []
        for engine in (local_engine, vllm_engine):
            with pytest.raises(InvalidInput) as caught:
                engine.check_constraint(constraint)
            errors.append((caught.value.code, caught.value.param, str(caught.value)))
        assert errors[0] == errors[1]
        assert errors[0][:2] == ("invalid_response_format", constraint.param)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {"response_format": json_schema_format({"type": "nonsense"})},
            "response_format.json_schema.schema",
        ),
        ({"structured_outputs": {"regex": "[^\\s\\S]"}}, "structured_outputs.regex"),
        ({"structured_outputs": {"choice": []}}, "structured_outputs.choice"),
    ],
)
def test_bad_constraint_over_http(client, backend, fields, param) -> None:
    before = getattr(getattr(backend, "pool", None), "servers", [])
    sent = [s.in_flight for s in before]
    r = post_chat(client, **fields)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_response_format"
    assert r.json()["error"]["param"] == param
    assert [s.in_flight for s in before] == sent
