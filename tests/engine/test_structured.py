"""Structured outputs in the engine: each constrained row keeps to its own grammar, whatever
else shares the batch, and answers exactly as it would alone."""

import asyncio
import json
import random
import re

import jsonschema
import pytest
import torch

from app.engine.errors import InvalidInput
from app.engine.prompts import encode
from app.engine.sampling import SamplingParams
from app.engine.structured import OutputConstraint
from tests.engine.helpers import (
    Job,
    LogitsRecorder,
    assert_same_greedy,
    reference_logits,
    run_alone,
    run_together,
)

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
TAGS = {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "minItems": 1, "maxItems": 3}
LABELS = ["positive", "negative", "a|b (c)"]
CODE = r"[A-Z]{2}-\d{3}"


def check_output(constraint: OutputConstraint, text: str) -> None:
    if constraint.kind == "json":
        jsonschema.validate(json.loads(text), json.loads(constraint.spec))
    elif constraint.kind == "choice":
        assert text in constraint.choices
    else:
        assert re.fullmatch(constraint.spec, text), text


def test_constrained_and_free_rows_in_one_batch_match_each_alone(make_engine, adapter_refs) -> None:
    engine = make_engine(batch_wait_ms=300)
    recorder = LogitsRecorder(engine)
    a0, a1, _ = adapter_refs
    jobs = [
        Job("The capital of France is", None, 60, constraint=OutputConstraint.json_schema(PERSON)),
        Job("Review: great film", a0, 40, constraint=OutputConstraint.json_schema(TAGS)),
        Job("Classify the sentiment. Review: terrible movie", a1, 12),  # free text
        Job("What is the capital of Italy?", None, 10, constraint=OutputConstraint.choice(LABELS)),
        Job("positive negative", a0, 10, constraint=OutputConstraint.regex(CODE)),
        Job("Translate to French: hello", None, 14),  # free text
        Job("Review: great film", None, 60, constraint=OutputConstraint.json_schema(PERSON)),
    ]
    alone = run_alone(engine, jobs)
    alone_logits = [recorder.take(engine, j) for j in jobs]
    assert engine.stats.max_rows == 1
    batched = run_together(engine, jobs)
    assert engine.stats.max_rows == len(jobs)
    for job, a, b, steps in zip(jobs, alone, batched, alone_logits, strict=True):
        assert_same_greedy(engine, job, a, b, (steps, recorder.take(engine, job)))
        if job.constraint is not None:
            assert b.finish_reason == "stop", (job.text, b.text)
            check_output(job.constraint, b.text)
    # Free rows are untouched by their neighbours' masks: the same prompt constrained and
    # free answers differently, and the free answer is the model's own greedy choice.
    free = run_alone(engine, [Job("Review: great film", None, 60)])[0]
    assert free.text != batched[-1].text
    first = int(reference_logits(engine, jobs[5].ids(engine), None).argmax())
    assert batched[5].token_ids[0] == first


def test_choice_picks_the_most_likely_label_prefix(make_engine) -> None:
    """Under a choice constraint the first token is the best of the labels' first tokens."""
    engine = make_engine()
    job = Job("Review: terrible movie", None, 10, constraint=OutputConstraint.choice(LABELS))
    result = run_alone(engine, [job])[0]
    assert result.text in LABELS
    logits = reference_logits(engine, job.ids(engine), None)
    firsts = {encode(engine.tokenizer, label)[0] for label in LABELS}
    # Every label starts with one of these tokens in its canonical spelling; the pick is at
    # least as likely as the best of them (it may be a shorter spelling of a label's start).
    assert float(logits[result.token_ids[0]]) >= max(float(logits[t]) for t in firsts) - 1e-4


def test_max_tokens_cuts_the_structure_and_says_length(make_engine) -> None:
    engine = make_engine()
    job = Job("The capital of France is", None, 6, constraint=OutputConstraint.json_schema(PERSON))
    result = run_alone(engine, [job])[0]
    assert result.finish_reason == "length"
    assert result.completion_tokens == 6
    assert '{"name":"'.startswith(result.text) or result.text.startswith('{"name":"')
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.text)


def test_sampled_constrained_rows_keep_to_their_grammar(make_engine) -> None:
    engine = make_engine()
    jobs = [
        Job(f"Review {i}: great film", None, 60, 0, 1.0, seed=i, constraint=c)
        for i, c in enumerate(
            [OutputConstraint.json_schema(PERSON), OutputConstraint.choice(LABELS)] * 3
        )
    ]
    for job, result in zip(jobs, run_together(engine, jobs), strict=True):
        assert result.finish_reason == "stop"
        check_output(job.constraint, result.text)


def test_bad_constraints_are_refused_before_queueing(make_engine) -> None:
    engine = make_engine()
    ids = encode(engine.tokenizer, "hello")
    bad = [
        OutputConstraint.json_schema({"type": "nonsense"}, "response_format"),
        OutputConstraint.json_schema({"enum": []}, "response_format"),
        OutputConstraint.regex("(a|b", "structured_outputs.regex"),
        OutputConstraint.regex(r"[^\s\S]", "structured_outputs.regex"),  # matches nothing
    ]

    async def submit(constraint: OutputConstraint) -> None:
        engine.submit(ids, SamplingParams(max_tokens=4, constraint=constraint))

    for constraint in bad:
        with pytest.raises(InvalidInput) as caught:
            asyncio.run(submit(constraint))
        assert caught.value.code == "invalid_response_format"
        assert caught.value.param == constraint.param
    assert engine.queued == 0 and engine.stats.forwards == 0


def test_compiled_grammars_are_cached_by_schema(make_engine) -> None:
    engine = make_engine(start=False)
    grammars = engine.grammars
    grammars.capacity = 2
    person = OutputConstraint.json_schema(PERSON)
    # The same schema from another request is the same cache entry.
    again = OutputConstraint.json_schema(json.loads(json.dumps(PERSON)), "response_format")
    assert grammars.compile(person) is grammars.compile(again)
    assert (grammars.stats.compiles, grammars.stats.hits) == (1, 1)
    grammars.compile(OutputConstraint.json_schema(TAGS))
    grammars.compile(OutputConstraint.regex(CODE))  # evicts PERSON, the least recently used
    grammars.compile(person)
    assert grammars.stats.compiles == 4


def test_forced_tokens_score_a_continuation(make_engine, adapter_refs) -> None:
    """A forced row generates exactly the given tokens; its log-probabilities are the
    model's own, step by step, as a plain forward pass over prompt + tokens gives them."""
    engine = make_engine()
    prompt = encode(engine.tokenizer, "Review: great film ->")
    label = encode(engine.tokenizer, " negative")

    async def score():
        params = SamplingParams(max_tokens=len(label), temperature=0.0, logprobs=0)
        handle = engine.submit(prompt, params, adapter_refs[1], forced_tokens=label)
        return await handle.result()

    result = asyncio.run(score())
    assert list(result.token_ids) == label
    expected = 0.0
    for k, token in enumerate(label):
        logits = reference_logits(engine, prompt + label[:k], adapter_refs[1])
        expected += float(torch.log_softmax(logits.float(), -1)[token])
    got = sum(e.logprob for e in result.logprobs)
    assert abs(got - expected) < 1e-3


# -- property-style: generated JSON schemas ------------------------------------------------


def random_schema(rng: random.Random, depth: int = 0) -> dict:
    kinds = ["integer", "number", "boolean", "enum", "string", "array"]
    if depth < 2:
        kinds.append("object")
    kind = rng.choice(kinds)
    if kind == "integer":
        low = rng.randint(-50, 50)
        return {"type": "integer", "minimum": low, "maximum": low + rng.randint(0, 500)}
    if kind == "number":
        return {"type": "number", "minimum": 0, "maximum": rng.choice([1, 10, 1000])}
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "enum":
        return {"enum": rng.sample(["red", "green", "blue", "cat", "dog", "a b", 'x"y'], 3)}
    if kind == "string":
        return {"type": "string", "minLength": rng.randint(0, 2), "maxLength": rng.randint(3, 12)}
    if kind == "array":
        low = rng.randint(0, 2)
        return {
            "type": "array",
            "items": random_schema(rng, depth + 1),
            "minItems": low,
            "maxItems": low + rng.randint(0, 3),
        }
    names = rng.sample(["id", "name", "score", "tags", "ok", "kind", "meta", "size"], 4)
    count = rng.randint(1, 4)
    properties = {n: random_schema(rng, depth + 1) for n in names[:count]}
    required = [n for n in properties if rng.random() < 0.6]
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def test_fifty_generated_schemas_yield_valid_json(make_engine) -> None:
    engine = make_engine(max_batch_size=16)
    rng = random.Random(13)
    schemas = [random_schema(rng) for _ in range(50)]
    # Top-level objects and arrays as well as scalars; nesting actually generated.
    assert {s.get("type", "enum") for s in schemas} >= {"object", "array"}
    prompts = ["The capital of France is", "Review: great film", "What is 2 plus 2?"]
    jobs = [
        Job(prompts[i % 3], None, 200, constraint=OutputConstraint.json_schema(s))
        for i, s in enumerate(schemas)
    ]
    for schema, result in zip(schemas, run_together(engine, jobs), strict=True):
        assert result.finish_reason == "stop", (schema, result.text)
        jsonschema.validate(json.loads(result.text), schema)
