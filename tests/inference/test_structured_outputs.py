"""Structured outputs through the HTTP API and the official openai client: OpenAI's
response_format and vLLM's structured_outputs, on every variant, plain and streamed, n > 1,
label log-probabilities, and every bad input's 400."""

import json
import re
from typing import Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from tests.conftest import ADMIN_KEY
from tests.registry_util import register_random_adapter
from tests.templates.util import create

REVIEW = [{"role": "user", "content": "Review: what a great film"}]
SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"enum": ["positive", "negative"]},
        "stars": {"type": "integer", "minimum": 1, "maximum": 5},
        "spoilers": {"type": "boolean"},
    },
    "required": ["sentiment", "stars", "spoilers"],
    "additionalProperties": False,
}
LABELS = ["positive", "negative", "neutral"]


class Verdict(BaseModel):
    sentiment: Literal["positive", "negative"]
    stars: int = Field(ge=1, le=5)
    spoilers: bool


def json_schema_format(schema: dict = SCHEMA, strict: bool = True) -> dict:
    return {
        "type": "json_schema",
        "json_schema": {"name": "verdict", "schema": schema, "strict": strict},
    }


def base(client) -> str:
    return client.app.state.engine.name


def post_chat(client, **body):
    body.setdefault("model", base(client))
    body.setdefault("messages", REVIEW)
    body.setdefault("max_tokens", 60)
    return client.post("/v1/chat/completions", json=body)


def post_completion(client, **body):
    body.setdefault("model", base(client))
    body.setdefault("prompt", "Review: what a great film\nVerdict:")
    body.setdefault("max_tokens", 60)
    return client.post("/v1/completions", json=body)


def sse_texts(response, key: str) -> dict[int, str]:
    texts: dict[int, str] = {}
    for line in response.text.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:])["choices"]:
                part = choice["delta"].get("content") if key == "chat" else choice["text"]
                texts[choice["index"]] = texts.get(choice["index"], "") + (part or "")
    return texts


def test_json_schema_chat_plain_streamed_and_n(client) -> None:
    r = post_chat(client, response_format=json_schema_format(), temperature=0)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    jsonschema.validate(json.loads(choice["message"]["content"]), SCHEMA)
    streamed = post_chat(client, response_format=json_schema_format(), temperature=0, stream=True)
    assert sse_texts(streamed, "chat") == {0: choice["message"]["content"]}
    many = post_chat(client, response_format=json_schema_format(), temperature=1, seed=3, n=3)
    for c in many.json()["choices"]:
        jsonschema.validate(json.loads(c["message"]["content"]), SCHEMA)


def test_vllm_structured_outputs_on_completions(client) -> None:
    r = post_completion(client, structured_outputs={"json": SCHEMA}, temperature=0)
    assert r.status_code == 200, r.text
    jsonschema.validate(json.loads(r.json()["choices"][0]["text"]), SCHEMA)
    r = post_completion(client, structured_outputs={"json": json.dumps(SCHEMA)}, n=2, seed=1)
    for c in r.json()["choices"]:
        jsonschema.validate(json.loads(c["text"]), SCHEMA)
    r = post_completion(
        client, structured_outputs={"choice": LABELS}, prompt=["a", "great film"], n=2, seed=5
    )
    assert [c["text"] in LABELS for c in r.json()["choices"]] == [True] * 4
    r = post_completion(client, structured_outputs={"regex": r"[A-Z]{3}-\d{2}"}, stream=True)
    assert re.fullmatch(r"[A-Z]{3}-\d{2}", sse_texts(r, "completion")[0])
    r = post_chat(client, response_format={"type": "json_object"}, temperature=0, max_tokens=200)
    content = r.json()["choices"][0]["message"]["content"]
    if r.json()["choices"][0]["finish_reason"] == "stop":
        assert isinstance(json.loads(content), dict)
    else:  # the tiny model may write one long string: still the start of an object
        assert content.startswith("{")
    # "text" is the default: free generation, as without the field.
    free = post_chat(client, response_format={"type": "text"}, temperature=0, max_tokens=8)
    plain = post_chat(client, temperature=0, max_tokens=8)
    assert free.json()["choices"][0]["message"] == plain.json()["choices"][0]["message"]


def test_max_tokens_cutting_the_structure_says_length(client) -> None:
    r = post_chat(client, response_format=json_schema_format(), temperature=0, max_tokens=3)
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(choice["message"]["content"])


def test_label_logprobs_with_choice(client) -> None:
    r = post_chat(client, structured_outputs={"choice": LABELS}, logprobs=True, temperature=0, n=2)
    assert r.status_code == 200, r.text
    engine = client.app.state.engine
    for choice in r.json()["choices"]:
        labels = choice["label_logprobs"]
        assert set(labels) == set(LABELS)
        assert all(v < 0 for v in labels.values())
        # The answer's own tokens, when spelled as its label is, sum to the same figure.
        answer = choice["message"]["content"]
        tokens = choice["logprobs"]["content"]
        if [t["token"] for t in tokens] == [
            engine.tokenizer.decode([t]) for t in engine.tokenizer.encode(answer)
        ]:
            assert abs(sum(t["logprob"] for t in tokens) - labels[answer]) < 1e-3
    # Without logprobs, no scores; streamed, they come with the finishing chunk.
    assert (
        post_chat(client, structured_outputs={"choice": LABELS}).json()["choices"][0][
            "label_logprobs"
        ]
        is None
    )
    streamed = post_chat(
        client, structured_outputs={"choice": LABELS}, logprobs=True, temperature=0, stream=True
    )
    finals = [
        json.loads(line[6:])["choices"][0]
        for line in streamed.text.splitlines()
        if line.startswith("data: {") and '"finish_reason":"' in line.replace(" ", "")
    ]
    assert finals and set(finals[0]["label_logprobs"]) == set(LABELS)
    plain_labels = r.json()["choices"][0]["label_logprobs"]
    assert finals[0]["label_logprobs"] == pytest.approx(plain_labels, abs=1e-4)
    # Completions: per prompt.
    c = post_completion(
        client, structured_outputs={"choice": LABELS}, prompt=["a", "b"], logprobs=0
    ).json()["choices"]
    assert set(c[0]["label_logprobs"]) == set(LABELS)
    assert c[0]["label_logprobs"] != c[1]["label_logprobs"]


BAD = [
    # (request fields, param)
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": "json"}, "response_format"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"schema": SCHEMA}}},
        "response_format.json_schema.name",
    ),
    (
        {"response_format": json_schema_format({"type": "nonsense"}, strict=False)},
        "response_format.json_schema.schema",
    ),
    (
        {"response_format": json_schema_format({"type": "integer", "minimum": 5, "maximum": 1})},
        "response_format.json_schema.schema",
    ),
    (
        {
            "response_format": json_schema_format(
                {**SCHEMA, "patternProperties": {"^x": {"type": "string"}}}
            )
        },
        "response_format.json_schema.schema.patternProperties",
    ),
    (
        {
            "response_format": json_schema_format(
                {
                    **SCHEMA,
                    "properties": {"s": {"type": "string", "minLength": 2}},
                    "required": ["s"],
                }
            )
        },
        "response_format.json_schema.schema.properties.s.minLength",
    ),
    (
        {"response_format": json_schema_format({**SCHEMA, "additionalProperties": True})},
        "response_format.json_schema.schema.additionalProperties",
    ),
    (
        {"response_format": json_schema_format({**SCHEMA, "required": ["stars"]})},
        "response_format.json_schema.schema.required",
    ),
    ({"structured_outputs": {"choice": []}}, "structured_outputs.choice"),
    ({"structured_outputs": {"choice": ["a", 3]}}, "structured_outputs.choice.1"),
    ({"structured_outputs": {"regex": "(a|b"}}, "structured_outputs.regex"),
    ({"structured_outputs": {"regex": r"[^\s\S]"}}, "structured_outputs.regex"),
    ({"structured_outputs": {"grammar": "root ::= 'a'"}}, "structured_outputs.grammar"),
    ({"structured_outputs": {"choice": ["a"], "regex": "a"}}, "structured_outputs"),
    ({"structured_outputs": {"json": "{not json"}}, "structured_outputs.json"),
    (
        {"structured_outputs": {"choice": ["a"]}, "response_format": {"type": "json_object"}},
        "structured_outputs",
    ),
]


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_bad_constraints_answer_400_before_anything_is_queued(client, endpoint: str) -> None:
    engine = client.app.state.engine
    forwards = engine.stats.forwards
    post = post_chat if endpoint == "chat" else post_completion
    for fields, param in BAD:
        r = post(client, **fields)
        assert r.status_code == 400, (fields, r.text)
        error = r.json()["error"]
        assert (error["code"], error["param"]) == ("invalid_response_format", param), fields
        assert error["message"]
    assert engine.stats.forwards == forwards  # nothing ran


# -- the openai client -------------------------------------------------------------------


@pytest.fixture
def oai(live_server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key=ADMIN_KEY, max_retries=0)


def test_openai_parse_on_every_variant(client, oai: openai.OpenAI) -> None:
    adapter = register_random_adapter("default", "verdict", seed=4)
    assert create(client).status_code == 201
    assert create(client, name="on-adapter", model=adapter).status_code == 201
    alias = client.post(
        "/v1/aliases", json={"name": "verdicts", "targets": [{"model": "tmpl:sentiment"}]}
    )
    assert alias.status_code == 201, alias.text
    answers = {}
    for model in [base(client), adapter, "tmpl:sentiment", "tmpl:on-adapter", "verdicts"]:
        out = oai.chat.completions.parse(
            model=model, messages=REVIEW, response_format=Verdict, temperature=0, max_tokens=60
        )
        parsed = out.choices[0].message.parsed
        assert isinstance(parsed, Verdict), model
        answers[model] = out.choices[0].message.content
    assert len(set(answers.values())) > 1  # the variants really differ
    # Streaming with a schema: the joined deltas are valid JSON for it.
    stream = oai.chat.completions.create(
        model=adapter,
        messages=REVIEW,
        response_format=json_schema_format(),
        temperature=0,
        max_tokens=60,
        stream=True,
    )
    joined = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(joined), SCHEMA)


def test_openai_parse_reports_a_cut_structure(oai: openai.OpenAI, client) -> None:
    with pytest.raises(openai.LengthFinishReasonError):
        oai.chat.completions.parse(
            model=base(client), messages=REVIEW, response_format=Verdict, max_tokens=3
        )
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(
            model=base(client),
            messages=REVIEW,
            extra_body={"structured_outputs": {"choice": []}},
        )
    assert caught.value.code == "invalid_response_format"
