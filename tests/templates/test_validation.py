"""Bad templates are refused on save with a 400 naming the problem; nothing is saved."""

import pytest

from tests.templates.util import SENTIMENT, create, error_of


def refused(client, code: str, param: str | None = None, **overrides) -> str:
    r = create(client, **overrides)
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["code"] == code, err
    if param is not None:
        assert err["param"] == param, err
    assert (
        client.get(f"/v1/templates/{overrides.get('name', SENTIMENT['name'])}").status_code == 404
    )
    return err["message"]


def test_syntax_error(client) -> None:
    msg = refused(
        client, "template_syntax_error", "instruction", instruction="Line one\n{{ input }"
    )
    assert "line 2" in msg
    msg = refused(
        client, "template_syntax_error", "instruction", instruction="{% for x in y %}{{ x }}"
    )
    assert "syntax error" in msg


def test_unknown_filter_is_a_syntax_error(client) -> None:
    msg = refused(client, "template_syntax_error", instruction="{{ input|shout }}")
    assert "shout" in msg


def test_variable_nothing_can_fill(client) -> None:
    msg = refused(
        client,
        "template_undefined_variable",
        "instruction",
        instruction="{{ topic }}: {{ input }}",
    )
    assert "'topic'" in msg


def test_example_missing_a_field_the_instruction_uses(client) -> None:
    msg = refused(
        client,
        "example_missing_field",
        "examples.1.topic",
        instruction="{{ topic }}: {{ input }}",
        examples=[
            {"input": "a", "output": "b", "topic": "t"},
            {"input": "c", "output": "d"},
        ],
        variables=["topic"],
    )
    assert "examples[1]" in msg and "'topic'" in msg


def test_declared_variable_with_default_fills_examples(client) -> None:
    r = create(
        client,
        instruction="{{ topic }}: {{ input }}",
        examples=[{"input": "c", "output": "d"}],
        variables={"topic": "films"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["latest"]["variables"] == {"topic": "films"}


@pytest.mark.parametrize(
    ("examples", "fragment"),
    [
        ([{"output": "x"}], "input"),
        ([{"input": "x"}], "output"),
        ([{"input": 3, "output": "x"}], "input"),
        ([{"input": "x", "output": "y", "bad key": 1}], "bad key"),
    ],
)
def test_malformed_examples(client, examples: list, fragment: str) -> None:
    r = create(client, examples=examples)
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["param"] == "examples" and fragment in err["message"]


def test_example_that_fails_to_render(client) -> None:
    msg = refused(
        client,
        "template_render_error",
        "examples.0",
        instruction="{{ meta.source }} {{ input }}",
        examples=[{"input": "a", "output": "b", "meta": {"other": 1}}],
    )
    assert "source" in msg


def test_prompt_that_cannot_fit_even_without_examples(client) -> None:
    window = client.app.state.engine.context_window
    msg = refused(
        client, "context_length_exceeded", "system_prompt", system_prompt="word " * window
    )
    assert str(window) in msg
    # Fits on its own, but not with the template's max_tokens on top.
    refused(client, "context_length_exceeded", "params.max_tokens", params={"max_tokens": window})


@pytest.mark.parametrize(
    ("selection", "param"),
    [
        ({"rule": "nearest"}, "example_selection.rule"),
        ({"rule": "similar_k"}, "example_selection"),
        ({"rule": "first_k", "k": 0}, "example_selection.k"),
    ],
)
def test_bad_selection_rule(client, selection: dict, param: str) -> None:
    r = create(client, example_selection=selection)
    assert r.status_code == 400, r.text
    assert error_of(r)["param"] == param


def test_bad_params_and_unknown_fields(client) -> None:
    r = create(client, params={"temperature": 5})
    assert r.status_code == 400 and error_of(r)["param"] == "params.temperature"
    r = create(client, params={"frequency_penalty": 1})
    assert r.status_code == 400 and error_of(r)["param"] == "params.frequency_penalty"
    r = create(client, instrucion="typo")
    assert r.status_code == 400 and error_of(r)["param"] == "instrucion"
    r = create(client, variables=["input"])
    assert r.status_code == 400 and error_of(r)["param"] == "variables"


def test_unknown_model(client) -> None:
    msg = refused(client, "model_not_found", "model", model="gpt-4")
    assert "gpt-4" in msg
