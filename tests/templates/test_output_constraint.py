"""A template version's default output constraint: stored with the version, applied unless
the request brings its own, checked when the version is saved; evaluations report the share
of answers that parse under it."""

import asyncio
import json

from app.engine.structured import OutputConstraint
from app.evals.dataset import LabeledExample
from app.evals.report import Outcome, variant_summary
from app.routing.resolve import Variant
from app.templates.rendering import ResolvedTemplate
from tests.templates.util import create, error_of
from workers.eval_runner import GenerationSettings, run_variant

LABELS = ["positive", "negative"]
MESSAGES = [{"role": "user", "content": "what a great film"}]


def ask(client, model: str, **fields):
    body = {"model": model, "messages": MESSAGES, "temperature": 0, "max_tokens": 40, **fields}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def test_default_constraint_is_versioned_and_yields_to_the_request(client) -> None:
    r = create(client, output_constraint={"choice": LABELS})
    assert r.status_code == 201, r.text
    version = client.get("/v1/templates/sentiment/versions/1").json()
    assert version["output_constraint"] == {"choice": LABELS}
    assert ask(client, "tmpl:sentiment") in LABELS
    # The request's own constraint wins over the template's.
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    own = ask(client, "tmpl:sentiment", structured_outputs={"json": schema})
    assert isinstance(json.loads(own)["ok"], bool)
    # A new version without a constraint (`{}` clears it); version 1 keeps its own.
    r = client.post("/v1/templates/sentiment/versions", json={"output_constraint": {}})
    assert r.status_code == 201, r.text
    assert client.get("/v1/templates/sentiment/versions/2").json()["output_constraint"] is None
    free = ask(client, "tmpl:sentiment@2", max_tokens=8)
    assert free == ask(client, "tmpl:sentiment@2", max_tokens=8)  # greedy, unconstrained
    assert ask(client, "tmpl:sentiment@1") in LABELS
    # Left out of a patch: the newest version's constraint is kept.
    client.post("/v1/templates/sentiment/versions", json={"output_constraint": {"regex": "a+"}})
    client.post("/v1/templates/sentiment/versions", json={"system_prompt": "Be brief."})
    assert client.get("/v1/templates/sentiment/versions/4").json()["output_constraint"] == {
        "regex": "a+"
    }


def test_an_explicit_text_format_turns_the_default_constraint_off(client) -> None:
    assert create(client, output_constraint={"choice": LABELS}).status_code == 201
    # Version 2: the same template without a constraint.
    r = client.post("/v1/templates/sentiment/versions", json={"output_constraint": {}})
    assert r.status_code == 201, r.text
    free = ask(client, "tmpl:sentiment@2", max_tokens=8)
    assert free not in LABELS  # the tiny model's own greedy answer
    assert ask(client, "tmpl:sentiment@1", max_tokens=8) in LABELS
    text = {"type": "text"}
    assert ask(client, "tmpl:sentiment@1", max_tokens=8, response_format=text) == free


def test_bad_default_constraints_are_refused_on_save(client) -> None:
    bad = [
        ({"choice": []}, "output_constraint.choice"),
        ({"regex": r"[^\s\S]"}, "output_constraint.regex"),
        ({"json": {"type": "nonsense"}}, "output_constraint.json"),
        ({"grammar": "x"}, "output_constraint.grammar"),
        ({"choice": ["a"], "regex": "a"}, "output_constraint"),
    ]
    for value, param in bad:
        r = create(client, output_constraint=value)
        assert r.status_code == 400, (value, r.text)
        error = error_of(r)
        assert (error["code"], error["param"]) == ("invalid_response_format", param), value
    assert client.get("/v1/templates/sentiment").status_code == 404  # nothing was saved


def test_evaluation_reports_the_share_of_answers_that_parse(tiny_engine) -> None:
    template = ResolvedTemplate(
        name="labels",
        version=1,
        model=tiny_engine.name,
        system_prompt="Classify the sentiment.",
        instruction="Review: {{ input }}",
        examples=[],
        rule="all",
        k=None,
        params={},
        variables={},
        output_constraint=OutputConstraint.choice(LABELS),
    )
    examples = [
        LabeledExample([{"role": "user", "content": t}], "positive")
        for t in ["great film", "terrible movie", "fine"]
    ]
    settings = GenerationSettings(max_tokens=12)

    async def both():
        constrained = await run_variant(
            tiny_engine,
            Variant("tmpl:labels@1", "template", template=template),
            examples,
            "label",
            settings,
        )
        free = await run_variant(
            tiny_engine, Variant(tiny_engine.name, "base"), examples, "label", settings
        )
        return constrained, free

    constrained, free = asyncio.run(both())
    assert all(o.answer in LABELS and o.parses for o in constrained)
    assert variant_summary(constrained)["parse_rate"] == 1.0
    assert variant_summary(free)["parse_rate"] is None
    # Answers cut by max_tokens and failed requests count as not parsing.
    mixed = [Outcome("positive", True, parses=True), Outcome('{"a"', False, parses=False)]
    mixed.append(Outcome(None, False, error="boom"))
    assert variant_summary(mixed)["parse_rate"] == 1 / 3
