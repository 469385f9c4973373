"""Server-side template injection: every payload class is refused (with a 400 that says
why) when the template is saved, or at the latest when a request renders it."""

import pytest

from app.templates import sandbox
from tests.templates.util import create, error_of


def refused_on_save(client, instruction: str, code: str, **extra) -> str:
    r = create(client, name="evil", instruction=instruction, examples=[], **extra)
    assert r.status_code == 400, (instruction, r.text)
    err = error_of(r)
    assert err["code"] == code, (instruction, err)
    assert err["param"] == "instruction"
    assert client.get("/v1/templates/evil").status_code == 404  # nothing was saved
    return err["message"]


@pytest.mark.parametrize(
    "payload",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ input.__class__.__base__ }}",
        "{{ input['__class__'] }}",
        "{{ ().__class__.__bases__[0].__subclasses__()[59] }}",
    ],
)
def test_dunder_attribute_walks(client, payload: str) -> None:
    assert "not allowed" in refused_on_save(client, payload, "template_unsafe")


@pytest.mark.parametrize(
    "payload",
    [
        "{{ lipsum.__globals__['os'].popen('id').read() }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ joiner.__init__.__globals__ }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ self._TemplateReference__context }}",
        "{{ range.__globals__ }}",
    ],
)
def test_globals_walks_through_jinja_helpers(client, payload: str) -> None:
    refused_on_save(client, payload, "template_unsafe")


@pytest.mark.parametrize(
    ("payload", "name"),
    [
        ("{{ config.items() }}", "config"),
        ("{{ request.environ }}", "request"),
        ("{{ os.popen('id').read() }}", "os"),
        ("{{ self }}", "self"),
        ("{{ __builtins__ }}", "__builtins__"),
    ],
)
def test_server_objects_are_not_reachable(client, payload: str, name: str) -> None:
    assert f"'{name}'" in refused_on_save(client, payload, "template_unsafe")


@pytest.mark.parametrize(
    "payload",
    [
        # Names assembled at run time slip past the text checks; the sandbox stops them.
        "{{ input['_' ~ '_class_' ~ '_'] }}",
        "{% set a = '_' %}{{ input[a ~ a ~ 'class' ~ a ~ a] }}",
        "{{ input|map(attribute='_' ~ '_class_' ~ '_')|list }}",
    ],
)
def test_attribute_names_built_at_run_time(client, payload: str) -> None:
    assert "unsafe" in refused_on_save(client, payload, "template_unsafe")


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ("{{ input|attr('upper') }}", "template_syntax_error"),  # attr filter: not offered
        ("{{ '{0.__class__}'.format(input) }}", "template_unsafe"),
        ("{{ '{0._' ~ '_class__}'.format(input) }}", "template_unsafe"),
        ("{{ '{:>999999999}'.format(input) }}", "template_unsafe"),
        ("{{ '%999999999s' % input }}", "template_unsafe"),
    ],
)
def test_format_strings_and_attr_filter(client, payload: str, code: str) -> None:
    refused_on_save(client, payload, code)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ("{% for i in range(10**9) %}x{% endfor %}", "template_too_expensive"),
        (
            "{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}",
            "template_too_expensive",
        ),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "template_too_expensive"),
        (
            "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}"
            "{{ f(40) }}",
            "template_too_expensive",
        ),
        ("{{ 2 ** 10000000 }}", "template_too_expensive"),
    ],
)
def test_huge_loops_and_recursion(client, payload: str, code: str) -> None:
    refused_on_save(client, payload, code)


@pytest.mark.parametrize(
    "payload",
    [
        "{{ 'a' * 10**9 }}",
        "{{ ['a'] * 10**9 }}",
        "{% set x = 'a' * 199999 %}{{ x ~ x ~ x }}",
        "{% set x = 'a' * 199999 %}{{ [x, x, x] }}",
        "{% set x = 'a' * 199999 %}{% set y %}{{ x }}{{ x }}{% endset %}{{ y }}",
        "{{ input|center(999999999) }}",
        "{{ input|batch(999999999, 'x')|list }}",
        "{{ 'ab'|replace('a', 'a' * 100000) * 3 }}",
    ],
)
def test_huge_outputs(client, payload: str) -> None:
    r = create(client, name="evil", instruction=payload, examples=[])
    assert r.status_code == 400, (payload, r.text)
    assert error_of(r)["code"] in ("template_too_large", "template_syntax_error")
    assert client.get("/v1/templates/evil").status_code == 404


@pytest.mark.parametrize(
    "payload",
    [
        "{% include 'secrets.txt' %}",
        "{% import 'x' as y %}",
        "{% from 'x' import y %}",
        "{% extends 'base' %}",
        "{% block b %}{% endblock %}",
    ],
)
def test_loading_other_templates(client, payload: str) -> None:
    assert "not allowed" in refused_on_save(client, payload, "template_unsafe")


def test_payload_in_an_example_field_is_inert(client) -> None:
    """Example fields and request values are data: they are never parsed as templates."""
    example = {"input": "{{ ''.__class__ }}", "output": "{{ config }}"}
    r = create(client, name="inert", instruction="Q: {{ input }}", examples=[example])
    assert r.status_code == 201, r.text
    out = client.post(
        "/v1/templates/inert/render",
        json={"input": "{{ 7*7 }} {% for i in range(10**9) %}{% endfor %}"},
    ).json()
    assert "Q: {{ ''.__class__ }}" in out["prompt"]
    assert "{{ config }}" in out["prompt"]
    assert "Q: {{ 7*7 }} {% for i in range(10**9) %}{% endfor %}" in out["prompt"]
    assert "49" not in out["prompt"]


def test_runaway_output_from_request_data_is_refused_when_served(client) -> None:
    # Harmless with the short input of the save-time dry run; large with a large input.
    r = create(
        client,
        name="echo",
        instruction="{% for i in range([input|length, 999]|min) %}{{ input }}{% endfor %}",
        examples=[],
    )
    assert r.status_code == 201, r.text
    big = "x" * 2000
    for call in (
        lambda: client.post("/v1/templates/echo/render", json={"input": big}),
        lambda: client.post(
            "/v1/chat/completions",
            json={"model": "tmpl:echo", "messages": [{"role": "user", "content": big}]},
        ),
        lambda: client.post("/v1/completions", json={"model": "tmpl:echo", "prompt": big}),
    ):
        resp = call()
        assert resp.status_code == 400, resp.text
        assert error_of(resp)["code"] == "template_too_large"


def test_request_variables_cannot_reach_internals(client) -> None:
    r = create(
        client,
        name="vars",
        instruction="{{ data.payload }} {{ input }}",
        examples=[],
        variables=["data"],
    )
    assert r.status_code == 201, r.text
    ok = client.post(
        "/v1/templates/vars/render",
        json={"input": "x", "variables": {"data": {"payload": "{{ config }}"}}},
    )
    assert ok.status_code == 200 and "{{ config }}" in ok.json()["prompt"]
    # Attribute walks on request-supplied objects stop at the whitelist.
    r = create(
        client,
        name="walk",
        instruction="{{ data[key] }}",
        examples=[],
        variables=["data", "key"],
    )
    assert r.status_code == 201, r.text
    bad = client.post(
        "/v1/templates/walk/render",
        json={"input": "x", "variables": {"data": {"a": 1}, "key": "__class__"}},
    )
    assert bad.status_code == 400
    assert error_of(bad)["code"] == "template_unsafe"


# -- the sandbox on its own (no database) --------------------------------------------------
def test_whitelisted_features_still_work() -> None:
    out = sandbox.render(
        "{{ input.upper() }}|{{ input|replace('a', 'b') }}|{{ items|join(', ') }}|"
        "{% for x in items %}{{ loop.index }}{{ x }}{% endfor %}|{{ d.k }}|{{ d.get('k') }}|"
        "{{ missing|default('dflt') }}|{{ 3 * 4 }}|{{ 'ab' ~ 'cd' }}",
        {"input": "banana", "items": ["p", "q"], "d": {"k": "v"}},
    )
    assert out == "BANANA|bbnbnb|p, q|1p2q|v|v|dflt|12|abcd"


def test_limits_are_enforced_by_the_sandbox_not_the_caller() -> None:
    with pytest.raises(sandbox.TemplateRefused) as exc:
        sandbox.render("{% for i in range(999) %}{{ input }}{% endfor %}", {"input": "x" * 1000})
    assert exc.value.code == "template_too_large"
    with pytest.raises(sandbox.TemplateRefused) as exc:
        sandbox.render("x" * (sandbox.MAX_SOURCE_CHARS + 1), {})
    assert exc.value.code == "template_too_large"
