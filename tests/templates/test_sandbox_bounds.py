"""The sandbox sizes what a template builds before building it, and charges recursive loops
like plain ones: a refused render leaves the process no bigger than before (issue 17)."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.templates import sandbox
from tests.templates.util import create, error_of

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
# What a refused render may leave behind; an unbounded one builds hundreds of MB here.
GROWTH_MARGIN_MB = 50


def peak_rss_mb() -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def peak_growth_mb(action: Callable[[], Any]) -> int:
    """How far the process's peak resident size rose while `action` ran (the peak is reset
    first, so an earlier, larger peak cannot hide this one)."""
    CLEAR_REFS.write_text("5")  # Linux: reset VmHWM to the current RSS
    before = peak_rss_mb()
    action()
    return peak_rss_mb() - before


def refused(source: str, variables: dict[str, Any] | None = None) -> sandbox.TemplateRefused:
    with pytest.raises(sandbox.TemplateRefused) as exc:
        sandbox.render(source, variables or {})
    return exc.value


# Each would build 150-500 MB if sized only after building.
BIG_BUILDS = [
    pytest.param("{{ items|join(sep) }}", {"items": ["a"] * 5000, "sep": "x" * 99_000}, id="join"),
    pytest.param("{{ (range(1000)|list * 5)|join('x' * 99000) }}", {}, id="join-built"),
    pytest.param(
        "{{ items|join(sep, attribute='k') }}",
        {"items": [{"k": "a"}] * 5000, "sep": "x" * 99_000},
        id="join-attribute",
    ),
    pytest.param(
        "{{ d|tojson(indent=999) }}",
        {"d": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1] * 9000]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
        id="tojson-indent",
    ),
    pytest.param(
        "{% set x = 'a' * 150000 %}{% set c %}{% for i in range(999) %}{{ x ~ i }}"
        "{% endfor %}{% endset %}{{ c|length }}",
        {},
        id="string-building-in-a-loop",
    ),
    pytest.param(
        "{% set c %}{% for i in range(999) %}{{ x }}{% endfor %}{% endset %}{{ c|length }}",
        {"x": ["\x00" * 190_000]},  # each print's text is 10x the list's size
        id="printing-a-list-in-a-loop",
    ),
]


@pytest.mark.parametrize(("source", "variables"), BIG_BUILDS)
def test_big_builds_are_refused_before_they_allocate(source: str, variables: dict) -> None:
    errors: list[sandbox.TemplateRefused] = []
    growth = peak_growth_mb(lambda: errors.append(refused(source, variables)))
    assert errors[0].code == "template_too_large", errors[0].message
    assert growth < GROWTH_MARGIN_MB, f"the process grew by {growth} MB before refusing"


@pytest.mark.parametrize(
    ("source", "variables", "code"),
    [
        ("{{ 'ab\ncd'|indent(64) }}{{ ('x\n' * 99999)|indent(8) }}", {}, "template_too_large"),
        ("{{ x|string }}", {"x": ["\x01" * 30_000]}, "template_too_large"),
        ("{{ x ~ '' }}", {"x": ["\x01" * 30_000]}, "template_too_large"),
        ("{{ d|tojson(indent=99) }}", {"d": [1]}, "template_too_large"),
        ("{{ d|tojson }}", {"d": ["<" * 40_000]}, "template_too_large"),  # <-escapes: 6x
        ("{{ (range(1000)|map('string')|list * 200)|join(',') }}", {}, "template_too_large"),
        ("{{ ([range(50)|list] * 999)|sum(start=[])|length }}", {}, "template_too_expensive"),
    ],
)
def test_sizes_are_known_before_building(source: str, variables: dict, code: str) -> None:
    assert refused(source, variables).code == code


def test_recursive_loops_charge_the_same_budget_as_plain_loops() -> None:
    # A million iterations through loop(...) (1,000 x 1,000, 1,001 calls): refused, not run.
    err = refused(
        "{% for a in range(1000) recursive %}{% if loop.depth == 1 %}"
        "{{ loop(range(1000)) }}{% endif %}{% endfor %}"
    )
    assert err.code == "template_too_expensive"


def test_bounded_features_still_work() -> None:
    tree = [{"name": "a", "children": [{"name": "b", "children": []}]}]
    out = sandbox.render(
        "{% for n in tree recursive %}{{ n.name }}({{ loop(n.children) }}){% endfor %}|"
        "{{ items|join(', ') }}|{{ rows|join('/', attribute='k') }}|{{ d|tojson }}|"
        "{{ d|tojson(indent=2)|length }}|{{ [1, 2]|string }}|{{ [[1], [2]]|sum(start=[]) }}|"
        "{{ 'a\nb'|indent(2, true) }}|{{ [1, 2, 3]|sum }}",
        {"tree": tree, "items": ["p", "q"], "rows": [{"k": 1}, {"k": 2}], "d": {"a": "<b>"}},
    )
    assert out == ('a(b())|p, q|1/2|{"a": "\\u003cb\\u003e"}|26|[1, 2]|[1, 2]|  a\n  b|6')


def test_a_big_join_through_the_api_is_refused_without_growing(client) -> None:
    """The issue's case: saved fine (the save-time dry run has short values), refused at
    render with template_too_large before the 495 MB string exists."""
    r = create(
        client,
        name="joiner",
        instruction="{{ items|join(sep) }} {{ input }}",
        examples=[],
        variables={"items": None, "sep": None},
    )
    assert r.status_code == 201, r.text
    body = {"input": "x", "variables": {"items": ["a"] * 5000, "sep": "x" * 99_000}}
    responses: list[Any] = []
    growth = peak_growth_mb(
        lambda: responses.append(client.post("/v1/templates/joiner/render", json=body))
    )
    assert responses[0].status_code == 400, responses[0].text
    err = error_of(responses[0])
    assert err["code"] == "template_too_large" and err["param"] == "variables"
    assert growth < GROWTH_MARGIN_MB, f"the API process grew by {growth} MB"


def test_a_big_join_built_by_the_template_is_refused_when_saved(client) -> None:
    responses: list[Any] = []
    growth = peak_growth_mb(
        lambda: responses.append(
            create(
                client,
                name="joiner",
                instruction="{{ (range(1000)|list * 5)|join('x' * 99000) }}{{ input }}",
                examples=[],
            )
        )
    )
    assert responses[0].status_code == 400, responses[0].text
    err = error_of(responses[0])
    assert err["code"] == "template_too_large" and err["param"] == "instruction"
    assert client.get("/v1/templates/joiner").status_code == 404
    assert growth < GROWTH_MARGIN_MB, f"the API process grew by {growth} MB"


def test_a_recursive_loop_bomb_is_refused_when_saved(client) -> None:
    r = create(
        client,
        name="bomb",
        instruction="{% for a in range(1000) recursive %}{% if loop.depth == 1 %}"
        "{{ loop(range(1000)) }}{% endif %}{% endfor %}{{ input }}",
        examples=[],
    )
    assert r.status_code == 400, r.text
    assert error_of(r)["code"] == "template_too_expensive"


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**300), max_value=2**300)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(value=JSON_VALUES, indent=st.sampled_from([None, 0, 1, 4, 16]))
def test_size_bounds_are_never_below_the_real_size(value: Any, indent: int | None) -> None:
    """The sizes computed before building are upper bounds of what gets built."""
    assert sandbox._text_chars(value, 10**9) >= len(str(value))
    built = sandbox._env.from_string("{{ v|tojson(indent=i) }}").render(v=value, i=indent)
    assert sandbox._nested_chars(value, 10**9, in_json=True, indent=indent or 0) >= len(built)
