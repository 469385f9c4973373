"""The grader templates: lookups only, unknown namespaces refused."""

import pytest

from app.errors import BadRequest
from app.graders.service import sample_from_text
from app.graders.templating import VariableError, check_template, render

CONTEXT = {
    "item": {"name": "Ada", "tags": ["x", {"k": 7}], "n": 3},
    "sample": {
        **sample_from_text('{"city": "Paris", "pop": [2.1]}'),
        "output_tools": [{"function": {"name": "get_weather", "arguments": '{"c":1}'}}],
    },
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Hi {{item.name}}!", "Hi Ada!"),
        ("{{ item.name }}/{{item.n}}", "Ada/3"),
        ("{{item.tags[1].k}}", "7"),
        ("{{item.tags}}", '["x", {"k": 7}]'),
        ("{{sample.output_json.city}}", "Paris"),
        ("{{sample.output_json.pop[0]}}", "2.1"),
        ("{{sample.output_tools[0].function.name}}", "get_weather"),
        ("{{sample.output_text}}", '{"city": "Paris", "pop": [2.1]}'),
        ("no variables {not one}", "no variables {not one}"),
    ],
)
def test_render(template: str, expected: str) -> None:
    assert render(template, CONTEXT) == expected


@pytest.mark.parametrize(
    "template",
    [
        "{{ env.HOME }}",
        "{{ sample.secret }}",
        "{{ sample }}",
        "{{ item.__class__() }}",
        "{{ 7 * 7 }}",
        "{{ sample.output_text.upper }}",
        "{{ item..x }}",
    ],
)
def test_bad_variables_are_refused(template: str) -> None:
    with pytest.raises(BadRequest) as exc:
        check_template(template, "grader.input")
    assert exc.value.param == "grader.input"
    assert exc.value.code == "invalid_template"


def test_missing_values_at_run_time() -> None:
    with pytest.raises(VariableError) as missing:
        render("{{item.nope}}", CONTEXT)
    assert not missing.value.sample_parse
    with pytest.raises(VariableError):
        render("{{item.tags[5]}}", CONTEXT)
    not_json = {"item": {}, "sample": sample_from_text("plain words")}
    with pytest.raises(VariableError) as parse:
        render("{{sample.output_json.city}}", not_json)
    assert parse.value.sample_parse
