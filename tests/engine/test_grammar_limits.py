"""What bounds a grammar compile: size limits and keyword rules checked before any work, a
deadline that stops the compile process, a caller that gives up stopping it too, and a
fixed number of compiles at once."""

import os
import threading

import pytest
import xgrammar as xgr

from app.engine import grammar_process
from app.engine.errors import EngineOverloaded, InvalidInput
from app.engine.grammar_rules import SUPPORTED, GrammarLimits
from app.engine.structured import Grammars, OutputConstraint
from app.protocol.structured import STRICT_KEYWORDS

# 46 bytes that take xgrammar minutes: a bounded repetition is unrolled into 20,000 states
# (5,000 took 14 s with the tiny model's 400-token vocabulary).
SLOW = {"type": "string", "pattern": "[a-z]{1,20000}"}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 10}},
    "required": ["name"],
    "additionalProperties": False,
}


def object_alternatives(count: int) -> dict:
    """The probe's shape: an anyOf of many objects."""
    return {
        "anyOf": [
            {
                "type": "object",
                "properties": {f"a{i}": {"type": "string"}, f"b{i}": {"type": "integer"}},
                "required": [f"a{i}", f"b{i}"],
            }
            for i in range(count)
        ]
    }


@pytest.fixture
def engine(make_engine):
    return make_engine(start=False)


def grammars(engine, **limits) -> Grammars:
    return Grammars(
        engine.tokenizer,
        engine.model.config.vocab_size,
        engine.eos_ids,
        limits=GrammarLimits(**limits),
    )


def compile_in_thread(g: Grammars, schema: dict, stop: threading.Event) -> tuple:
    """Starts a compile; returns (thread, outcome list), once its process is running."""
    outcome: list = []
    before = grammar_process.running()

    def run() -> None:
        try:
            outcome.append(g.compile(OutputConstraint.json_schema(schema, "schema"), stop))
        except Exception as exc:  # the test looks at what it was
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    while thread.is_alive() and not grammar_process.running() - before:
        threading.Event().wait(0.02)
    return thread, outcome


def test_schemas_over_the_size_limits_are_refused_before_compiling(make_engine) -> None:
    engine = make_engine(start=False, grammar_limits=GrammarLimits(max_bytes=4000, max_nodes=100))
    big = OutputConstraint.json_schema(
        object_alternatives(50), "response_format.json_schema.schema"
    )
    with pytest.raises(InvalidInput) as caught:
        engine.check_constraint(big)
    assert caught.value.code == "response_format_too_large"
    assert caught.value.param == "response_format.json_schema.schema"
    assert "4000" in str(caught.value) and "GRAMMAR_MAX_BYTES" in str(caught.value)
    many = OutputConstraint.json_schema({"enum": list(range(150))}, "structured_outputs.json")
    with pytest.raises(InvalidInput) as caught:
        engine.check_constraint(many)
    assert caught.value.code == "response_format_too_large"
    assert "GRAMMAR_MAX_NODES" in str(caught.value)
    with pytest.raises(InvalidInput):
        engine.check_constraint(OutputConstraint.regex("a" * 4001, "structured_outputs.regex"))
    assert engine.grammars.stats.compiles == 0
    engine.check_constraint(OutputConstraint.json_schema(object_alternatives(5)))  # within them


def test_a_compile_past_the_deadline_is_stopped_and_refused(make_engine) -> None:
    engine = make_engine(start=False, grammar_limits=GrammarLimits(compile_timeout_s=0.5))
    with pytest.raises(InvalidInput) as caught:
        engine.check_constraint(OutputConstraint.json_schema(SLOW, "response_format"))
    assert caught.value.code == "response_format_too_complex"
    assert caught.value.param == "response_format"
    assert "GRAMMAR_COMPILE_TIMEOUT_S" in str(caught.value)
    assert grammar_process.running() == set()  # its process is gone
    assert engine.grammars.stats.timeouts == 1
    # The next schema compiles as usual.
    engine.check_constraint(OutputConstraint.json_schema(PERSON))
    assert engine.grammars.stats.compiles == 1


def test_a_caller_that_gives_up_stops_its_compile(engine) -> None:
    g = grammars(engine, compile_timeout_s=3600)
    stop = threading.Event()
    thread, outcome = compile_in_thread(g, SLOW, stop)
    (pid,) = grammar_process.running()
    stop.set()
    thread.join()
    assert isinstance(outcome[0], grammar_process.CompileCancelled)
    assert grammar_process.running() == set()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped, not left running
    assert (g.stats.cancelled, g.stats.compiles, g.stats.timeouts) == (1, 0, 0)


def test_compiles_past_the_slots_are_refused_at_once(engine) -> None:
    g = grammars(engine, compile_timeout_s=3600)
    stops = [threading.Event() for _ in range(grammar_process.MAX_CONCURRENT)]
    running = [compile_in_thread(g, {**SLOW, "title": str(i)}, s) for i, s in enumerate(stops)]
    try:
        assert len(grammar_process.running()) == grammar_process.MAX_CONCURRENT
        with pytest.raises(EngineOverloaded):
            g.compile(OutputConstraint.json_schema(PERSON))
    finally:
        for stop in stops:
            stop.set()
        for thread, _ in running:
            thread.join()
    g.compile(OutputConstraint.json_schema(PERSON))  # a slot is free again


UNSUPPORTED = [
    # (schema, param under "schema")
    ({"type": "integer", "not": {"const": 3}}, "schema.not"),
    (
        {"type": "object", "properties": {"x": {"type": "string", "format": "color"}}},
        "schema.properties.x.format",
    ),
    ({"allOf": [{"type": "integer"}, {"minimum": 3}]}, "schema.allOf"),
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "schema.uniqueItems"),
    ({"type": "array", "contains": {"type": "string"}}, "schema.contains"),
    ({"type": "integer", "if": {"minimum": 3}, "then": {"maximum": 5}}, "schema.if"),
    ({"type": "object", "dependentRequired": {"a": ["b"]}}, "schema.dependentRequired"),
    ({"anyOf": [{"type": "string"}, {"maxLength": 3}]}, "schema.anyOf.1.maxLength"),
    (
        {"$defs": {"x": {"type": "object", "unevaluatedProperties": False}}},
        "schema.$defs.x.unevaluatedProperties",
    ),
    ({"type": "string", "x-vendor": 1}, "schema.x-vendor"),
]


@pytest.mark.parametrize(("schema", "param"), UNSUPPORTED)
def test_keywords_the_grammar_would_ignore_are_refused_with_their_path(
    engine, schema: dict, param: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        engine.check_constraint(OutputConstraint.json_schema(schema, "schema"))
    assert (caught.value.code, caught.value.param) == ("invalid_response_format", param)
    assert param.rsplit(".", 1)[-1] in str(caught.value)


def test_keywords_the_grammar_enforces_compile_and_hold(engine) -> None:
    schema = {
        "type": "object",
        "properties": {
            "email": {"type": "string", "format": "email", "title": "Email"},
            "tags": {"type": "object", "patternProperties": {"^t": {"type": "integer"}}},
            "kind": {"oneOf": [{"const": "a"}, {"const": "b"}], "description": "tagged"},
            "ref": {"allOf": [{"$ref": "#/$defs/n"}]},
        },
        "required": ["email", "kind"],
        "$defs": {"n": {"type": ["integer", "null"], "minimum": 0}},
    }
    compiled = engine.grammars.compile(OutputConstraint.json_schema(schema))

    def accepts(text: str) -> bool:
        return xgr.GrammarMatcher(compiled).accept_string(text)

    assert accepts('{"email":"a@b.co","kind":"a"}')
    assert not accepts('{"email":"nope","kind":"a"}')  # format
    assert not accepts('{"email":"a@b.co","tags":{"t1":"x"},"kind":"a"}')  # patternProperties
    assert not accepts('{"email":"a@b.co","kind":"c"}')  # oneOf
    assert not accepts('{"email":"a@b.co","kind":"a","ref":-1}')  # the $ref's minimum


def test_every_strict_mode_keyword_is_one_the_grammar_keeps() -> None:
    """A schema OpenAI's strict mode accepts is never then refused by the grammar's keyword
    check (the two lists are kept apart: one is OpenAI's contract, one xgrammar's)."""
    assert STRICT_KEYWORDS <= SUPPORTED, sorted(STRICT_KEYWORDS - SUPPORTED)
