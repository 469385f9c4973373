"""The sandbox sizes what a template builds before building it, and charges recursive loops
like plain ones: a refused render leaves the process no bigger than before (issue 17).
Operations cost what they handle, and a render stops when its client leaves (hardening
issue, item 8)."""

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.inference.disconnect import ClientClosedRequest, run_until_disconnected
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
        ("{{ ([range(50)|list] * 800)|sum(start=[])|length }}", {}, "template_too_expensive"),
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
    assert sandbox.measure(value, 10**9).chars >= len(str(value))
    built = sandbox.render("{{ v|tojson(indent=i) }}", {"v": value, "i": indent})
    assert sandbox.measure(value, 10**9, in_json=True, indent=indent or 0).chars >= len(built)


def test_template_code_runs_only_under_a_budget() -> None:
    """render() and compiling set a budget; a compiled template run any other way fails
    loudly instead of running on a budget made up on the spot (and kept afterwards)."""
    source = "{{ 'ab'|upper }}{{ x|length }}"  # a constant Jinja folds while compiling
    template = sandbox.compile_template(source)
    assert sandbox.render(source, {"x": [1, 2]}) == "AB2"
    assert sandbox.undeclared_variables(source) == {"x"}
    with pytest.raises(RuntimeError, match="outside sandbox.render"):
        template.render(x=[1, 2])


def test_every_size_limit_refuses_with_the_same_code_and_shape() -> None:
    """One guard: each limit it checks answers template_too_large, naming what and the
    limit."""
    cases = [
        ("x" * (sandbox.MAX_SOURCE_CHARS + 1), {}, str(sandbox.MAX_SOURCE_CHARS)),
        ("{{ x * 3 }}", {"x": "a" * 100_000}, str(sandbox.MAX_VALUE_CHARS)),
        ("{{ x + x + x }}", {"x": "a" * 90_000}, str(sandbox.MAX_VALUE_CHARS)),
        ("{{ x|replace('a', 'bb') }}", {"x": "a" * 150_000}, str(sandbox.MAX_VALUE_CHARS)),
        ("{{ 'a'|indent(65) }}", {}, str(sandbox.MAX_INDENT)),
        ("{{ [1]|tojson(indent=17) }}", {}, str(sandbox.MAX_JSON_INDENT)),
        (
            "{% for i in range(3) %}{{ x }}{% endfor %}",
            {"x": "a" * 150_000},
            str(sandbox.MAX_OUTPUT_CHARS),
        ),
    ]
    for source, variables, limit in cases:
        err = refused(source, variables)
        assert err.code == "template_too_large", (source[:40], err.message)
        assert limit in err.message, err.message


# -- operations on big values cost what they handle (hardening issue, item 8) ---------------
# A 1,000-item value (or 64,000 characters): each operation on it costs at least 1,000 of the
# 50,000 budget units. Charged 1 per operation, a million-item request variable would have
# allowed 50,000 tests at ~8 ms each: minutes of CPU in one render.
N = 1_000
BIG = {
    "big": list(range(N)),
    "same": list(range(N)),
    "words": [f"w{i}" for i in range(N)],
    "text": "ab" * (32 * N),  # 64,000 characters: 1,000 units at 64 characters a unit
    "table": {f"k{i}": i for i in range(N)},
    "table2": {f"k{i}": i for i in range(N)},
}
COSTLY_OPERATIONS = [
    pytest.param("{% if -1 in big %}{% endif %}", id="in"),
    pytest.param("{% if -1 not in big %}{% endif %}", id="not-in"),
    pytest.param("{% if -1 is in(big) %}{% endif %}", id="in-test"),
    pytest.param("{% if big == same %}{% endif %}", id="eq"),
    pytest.param("{% if big is eq(same) %}{% endif %}", id="eq-test"),
    pytest.param("{% if big < same %}{% endif %}", id="lt"),
    pytest.param("{% if table == table2 %}{% endif %}", id="dict-eq"),
    pytest.param("{% if 'x' in text %}{% endif %}", id="in-string"),
    pytest.param("{{ big.count(-1) }}", id="count"),
    pytest.param("{{ big.index(999) }}", id="index"),
    pytest.param("{{ text.count('x') }}", id="str-count"),
    pytest.param("{{ text.find('x') }}", id="str-find"),
    pytest.param("{{ big|sum }}", id="sum"),
    pytest.param("{{ words|join(',')|length }}", id="join"),
    pytest.param("{{ words|sort|first }}", id="sort"),
    pytest.param("{{ words|unique|list|length }}", id="unique"),
    pytest.param("{{ big|reverse|first }}", id="reverse"),
    pytest.param("{{ big|max }}", id="max"),
    pytest.param("{{ big|length }}{{ big[1:]|length }}", id="slice"),
    pytest.param("{{ [-1]|select('in', big)|list }}", id="select-in"),
]


def repeated(operation: str, times: int) -> str:
    return f"{{% for i in range({times}) %}}{operation}{{% endfor %}}"


@pytest.mark.parametrize("operation", COSTLY_OPERATIONS)
def test_operations_on_big_values_are_charged_by_their_size(operation: str) -> None:
    budget = sandbox.RenderBudget()
    sandbox.render(repeated(operation, 1), BIG, budget=budget)
    # About one unit per item handled: at least N, and a small multiple of it at most
    # (both sides of `==`; a dict's keys and values; sorting's log factor).
    assert N <= budget.operations <= 8 * N, budget.operations
    sandbox.render(repeated(operation, 5), BIG)  # a few on a big value still fit
    err = refused(repeated(operation, sandbox.MAX_OPERATIONS // N + 1), BIG)
    assert err.code == "template_too_expensive", err.message


def test_a_million_item_request_variable_is_refused_at_its_first_operation() -> None:
    source = "{% for i in range(1000) %}{% if i in big %}{{ i }}{% endif %}{% endfor %}"
    big = list(range(1_000_000))
    budget = sandbox.RenderBudget()
    with pytest.raises(sandbox.TemplateRefused) as exc:
        sandbox.render(source, {"big": big}, budget=budget)
    assert exc.value.code == "template_too_expensive"
    assert budget.operations <= 3, "refused at its first test, before running it"


def test_small_values_cost_what_they_did() -> None:
    """Scalars and short strings add nothing to an operation: a 1,000 x 40 loop of
    comparisons still fits, as it did."""
    source = (
        "{% for i in range(1000) %}{% for j in range(40) %}{% if i == j and tone in "
        "'neutral' %}x{% endif %}{% endfor %}{% endfor %}"
    )
    assert sandbox.render(source, {"tone": "neutral"}) == "x" * 40


# -- a render stops when its client leaves -----------------------------------------------------
class SetAfter(threading.Event):
    """A cancel flag that reads as set from its `after`-th check on, as if the client had
    left while the render ran."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after, self.checks = after, 0

    def is_set(self) -> bool:
        self.checks += 1
        return self.checks >= self.after or super().is_set()


def test_a_render_stops_at_its_next_charge_once_the_cancel_flag_is_set() -> None:
    flag = SetAfter(100)
    source = "{% for i in range(1000) %}{% for j in range(10) %}.{% endfor %}{% endfor %}"
    budget = sandbox.RenderBudget(cancel=flag)
    with pytest.raises(sandbox.TemplateRefused) as exc:
        sandbox.render(source, {}, budget=budget)
    assert exc.value.code == "render_cancelled"
    assert budget.operations < 1_000  # of the 11,000 the whole render costs
    # Without the flag set, the same render completes.
    assert len(sandbox.render(source, {}, budget=sandbox.RenderBudget(cancel=threading.Event())))


def test_a_render_set_going_by_a_request_stops_when_its_client_disconnects() -> None:
    """The inference routes build prompts through run_until_disconnected: the disconnect
    sets the render's cancel flag, the render stops, and the request ends as a 499."""
    started = threading.Event()
    yielded = [0]

    class Disconnected:  # a request whose client has gone once the render has started
        async def receive(self) -> dict[str, str]:
            await asyncio.to_thread(started.wait, 30)
            return {"type": "http.disconnect"}

    def items() -> Iterator[int]:
        started.set()
        for i in range(1000):  # each item is one charge: the flag is read each time
            time.sleep(0.001)
            yielded[0] += 1
            yield i

    source = "{% for i in range(50) %}{% for x in items() %}{% endfor %}{% endfor %}"

    def build(_stop: threading.Event) -> str:  # the render reads the flag from its context
        return sandbox.render(source, {"items": items})

    with pytest.raises(ClientClosedRequest):
        asyncio.run(run_until_disconnected(Disconnected(), build))
    assert yielded[0] < 50 * 1000, "the render ran to its end"
