"""A Jinja2 environment for untrusted template text.

Template text comes from API clients, so rendering it must never reach Python internals,
the server's configuration or the file system, and must never run for long or allocate much.
On top of Jinja's ImmutableSandboxedEnvironment this module:

- exposes no globals but a small `range`, a short list of filters and the objects a
  template is given (strings, numbers, lists and dicts from JSON);
- allows attributes only from a whitelist of read-only str/dict/list methods and `loop.*`;
- refuses `import`, `include`, `extends`, `block` and names such as `config`, `os`, `self`
  when a template is compiled, before anything runs;
- counts every loop iteration (recursive `loop(...)` calls included), call, filter, test,
  comparison and arithmetic operation against a per-render budget, each charged by the size
  of what it handles (`x in big`, `a == b`, `big.count(x)`, `big|sort`, `big[1:]`: about one
  unit per item and per 64 characters of its operands, and per item it builds), so a
  render's CPU is bounded whatever the request's variables hold; and checks, at each
  charge, a cancel flag that the inference routes set when the client disconnects
  (`cancelled_by`);
- sizes every value before it is built: `*`, `+`, `~`, `join`, `tojson`, `indent`,
  `replace`, `string`, printing a list and joining captured output compute their result's
  length (or an upper bound) from their operands first and refuse before allocating, and
  the characters one rendering builds in all are capped too (a loop that builds a new string
  per iteration and keeps them, in a `{% set %}` block say, stops at that cap);
- caps the rendered output.

Sizes come from one estimator (`measure`) and every size limit is checked by one guard
(`check_size`, code template_too_large). Template code runs only under a budget: render()
sets one, and so does compiling (Jinja folds constant expressions then); anything else that
runs a compiled template is a bug and raises RuntimeError.

Every refusal is a `TemplateRefused` naming the problem; the service turns it into a 400.
"""

import contextvars
import math
import operator
import threading
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, MappingView
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, NamedTuple

from jinja2 import (
    StrictUndefined,
    TemplateSyntaxError,
    Undefined,
    nodes,
    pass_environment,
    pass_eval_context,
)
from jinja2 import filters as jinja_filters
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from jinja2.ext import Extension
from jinja2.filters import FILTERS
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

MAX_SOURCE_CHARS = 16_000  # one template's text
MAX_VALUE_CHARS = 200_000  # any string or list a template builds
MAX_OUTPUT_CHARS = 400_000  # one rendering
MAX_RANGE = 1_000  # items a single range() may yield
MAX_OPERATIONS = 50_000  # budget units per rendering: see RenderBudget
CHARS_PER_UNIT = 64  # characters an operation handles for one budget unit (items: 1 each)
MAX_INT_BITS = 4_096  # integers a template computes
MAX_BUILT_CHARS = 2_000_000  # characters all the values one rendering builds hold, together
MAX_JSON_INDENT = 16  # tojson(indent=N): each nesting level adds N characters per item
MAX_INDENT = 64  # indent(width): characters added per line
MAX_SUM_COPIES = 2_000_000  # items copied when sum() concatenates lists (quadratic)

# Names that mean something dangerous in other Jinja deployments (Flask's config/request,
# the os module) or Jinja's own helpers; a template that names them is refused outright.
FORBIDDEN_NAMES = frozenset(
    {
        "self",
        "config",
        "request",
        "session",
        "g",
        "os",
        "sys",
        "builtins",
        "__builtins__",
        "lipsum",
        "cycler",
        "joiner",
        "namespace",
        "dict",
        "url_for",
        "get_flashed_messages",
        "environment",
        "context",
    }
)

FORBIDDEN_NODES: dict[type[nodes.Node], str] = {
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from ... import",
    nodes.Block: "block",
}

SAFE_STR_METHODS = frozenset(
    {
        "lower",
        "upper",
        "title",
        "capitalize",
        "casefold",
        "swapcase",
        "strip",
        "lstrip",
        "rstrip",
        "startswith",
        "endswith",
        "split",
        "rsplit",
        "splitlines",
        "partition",
        "rpartition",
        "removeprefix",
        "removesuffix",
        "count",
        "find",
        "rfind",
        "isalpha",
        "isalnum",
        "isdigit",
        "isnumeric",
        "isspace",
        "islower",
        "isupper",
        "istitle",
    }
)
SAFE_DICT_METHODS = frozenset({"items", "keys", "values", "get"})
SAFE_LIST_METHODS = frozenset({"index", "count"})
SAFE_LOOP_ATTRS = frozenset(
    {
        "index",
        "index0",
        "revindex",
        "revindex0",
        "first",
        "last",
        "length",
        "depth",
        "depth0",
        "previtem",
        "nextitem",
        "changed",
        "cycle",
    }
)

# Filters whose output is bounded by their input (a small constant factor at most:
# upper() and escape() may lengthen text 3-5 times, urlencode 12 times); the ones whose
# output can multiply (join, tojson, string, indent, replace, sum) are sized exactly before
# they run, below. Left out on purpose: attr (attribute walks by name),
# format/center/wordwrap (a width argument allocates), random (not reproducible), slice and
# batch (a count argument loops or pads), pprint, xmlattr, filesizeformat.
SAFE_FILTERS = [
    *("abs", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first"),
    *("float", "forceescape", "int", "items", "join", "last", "length", "list", "lower"),
    *("map", "max", "min", "reject", "rejectattr", "reverse", "round", "safe", "select"),
    *("selectattr", "sort", "string", "striptags", "sum", "title", "tojson", "trim"),
    *("truncate", "unique", "upper", "urlencode", "wordcount", "groupby"),
]


# Filters that look at one item or the length only: one unit, whatever their operand's size.
CONSTANT_TIME_FILTERS = frozenset({"length", "count", "first", "last", "d", "default"})
# Filters that sort their operand: about log2(n) comparisons per item, charged log2(n)/2 units
# per item (a comparison costs less than the unit's walk step; measured against plain loops).
SORTING_FILTERS = frozenset({"sort", "dictsort", "groupby"})


class TemplateRefused(Exception):
    """The template text is unsafe, invalid, or exceeded a limit while rendering."""

    def __init__(self, message: str, code: str = "template_invalid") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class RenderBudget:
    """What one rendering may spend, in units: each loop iteration, call, filter and
    arithmetic operation costs 1, plus 1 per item and per CHARS_PER_UNIT characters of the
    values it handles (see `Size.cost`) and 1 per item of a list or dict it builds;
    comparisons and tests cost only the values they handle, so comparing scalars and short
    strings stays free. A unit is a few microseconds of CPU at most (docs/benchmarks.md), so
    the budget bounds a render's time. `cancel`, when set, stops the render at its next
    charge."""

    def __init__(self, cancel: threading.Event | None = None) -> None:
        self.operations = 0
        self.built = 0
        self.cancel = cancel

    def left(self) -> int:
        return MAX_OPERATIONS - self.operations

    def charge(self, n: int = 1) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise TemplateRefused(
                "Template rendering stopped: the client went away.", code="render_cancelled"
            )
        if self.operations + n > MAX_OPERATIONS:  # what was spent stays what it was
            raise TemplateRefused(
                f"Template rendering exceeded {MAX_OPERATIONS} operations (loops, calls, "
                "arithmetic, and the items and characters they handle); simplify the "
                "template or send smaller variables.",
                code="template_too_expensive",
            )
        self.operations += n

    def build(self, chars: int) -> None:
        self.built += chars
        check_size(self.built, MAX_BUILT_CHARS, "The text of all the values this render built")


_budget: contextvars.ContextVar[RenderBudget] = contextvars.ContextVar("template_budget")
_cancel: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "template_cancel", default=None
)


@contextmanager
def cancelled_by(flag: threading.Event) -> Iterator[None]:
    """Renders started inside this block stop (render_cancelled) once `flag` is set."""
    token = _cancel.set(flag)
    try:
        yield
    finally:
        _cancel.reset(token)


@contextmanager
def _spending(budget: RenderBudget) -> Iterator[RenderBudget]:
    """Template code run inside this block charges `budget`."""
    token = _budget.set(budget)
    try:
        yield budget
    finally:
        _budget.reset(token)


def _current() -> RenderBudget:
    """The budget of the render (or compile) under way. Template code runs only inside
    render() or while compiling (compile_template, undeclared_variables), which each set one;
    code that runs a compiled template some other way (`Template.render()`) is a bug, and
    fails here rather than run with a budget nobody would see."""
    budget = _budget.get(None)
    if budget is None:
        raise RuntimeError("sandboxed template code ran outside sandbox.render()")
    return budget


def _charge(n: int = 1) -> None:
    _current().charge(n)


# -- the one size guard ----------------------------------------------------------------------
def too_large(message: str) -> TemplateRefused:
    """Every template_too_large refusal: from check_size, or from render() when Python itself
    refuses an allocation (MemoryError, OverflowError)."""
    return TemplateRefused(message, code="template_too_large")


def check_size(size: int, limit: int, what: str, unit: str = "characters") -> None:
    """The one size guard: `what` may hold at most `limit` `unit`. `size` is exact or an
    upper bound (`measure`), computed before the value is built wherever it can be."""
    if size > limit:
        raise too_large(f"{what} is over the limit of {limit} {unit}.")


# -- sizes before building -----------------------------------------------------------------
# One walk sizes a value without building its text: an upper bound on the length of its text
# (what limits and the built-characters total use) and how many items it holds (what handling
# it costs). The walk stops as soon as it passes its limits, so sizing a huge value is cheap
# and costs no more than what it is charged.
OTHER_CHARS = 200  # repr of a loop, macro or other template object
VIEW_CHARS = 13  # "dict_values(" and ")" around a dict view's list
_CONTAINERS = (dict, list, tuple, set, frozenset, MappingView)
UNLIMITED = 1 << 62


class Size(NamedTuple):
    chars: int  # an upper bound on the length of the value's text (counted up to a limit)
    items: int  # values held inside its lists, tuples, sets, dicts and dict views, nested

    @property
    def cost(self) -> int:
        """Budget units to handle the value once (scalars and short strings: 0)."""
        return self.items + self.chars // CHARS_PER_UNIT


def _int_chars(n: int) -> int:
    return n.bit_length() * 31 // 100 + 2  # decimal digits (0.31 > log10(2)) and a sign


def _repr_str_chars(s: str) -> int:
    """len(repr(s)): quotes and escapes; control characters may become \\x.. or \\U........"""
    extra = 2 + s.count("\\") + s.count("'") + s.count('"')
    if s.isprintable():
        return len(s) + extra
    simple = s.count("\n") + s.count("\r") + s.count("\t")
    if s.replace("\n", "").replace("\r", "").replace("\t", "").isprintable():
        return len(s) + extra + simple
    return 10 * len(s) + extra


def _json_str_chars(s: str) -> int:
    """len(htmlsafe_json_dumps(s)): ASCII escapes, and <>&' become \\u00XX."""
    if s.isascii() and s.isprintable():
        html = s.count("<") + s.count(">") + s.count("&") + s.count("'")
        return len(s) + 2 + s.count('"') + s.count("\\") + 5 * html
    return 12 * len(s) + 2  # a non-BMP character becomes two \\uXXXX escapes


def _scalar_chars(value: Any, in_json: bool) -> int:
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return _int_chars(value)
    if isinstance(value, float):
        return 24
    if isinstance(value, str):
        return _json_str_chars(value) if in_json else _repr_str_chars(value)
    return OTHER_CHARS


def measure(
    value: Any,
    max_chars: int = MAX_VALUE_CHARS,
    max_items: int = UNLIMITED,
    *,
    in_json: bool = False,
    indent: int = 0,
) -> Size:
    """The size of str(value) (in_json: of tojson(value, indent)) and the items it holds,
    counted until either passes its limit."""
    if isinstance(value, str) and not in_json:
        return Size(len(value), 0)  # str(s) is s
    chars = items = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is int:  # the common leaves first, by exact type: sizing runs per item
            chars += item.bit_length() * 31 // 100 + 2
        elif kind is str or kind is float or kind is bool or item is None:
            chars += _scalar_chars(item, in_json)
        elif kind is dict or kind is list or isinstance(item, _CONTAINERS):
            # Each item inside: a separator and, indented, a newline and its indent; a dict
            # view prints as "dict_items([...])".
            per_item = 2 + (1 + (depth + 1) * indent if indent else 0)
            is_dict = isinstance(item, dict)
            chars += 2 + len(item) * (per_item + (2 if is_dict else 0)) + (1 + depth * indent)
            chars += VIEW_CHARS if isinstance(item, MappingView) else 0
            items += 2 * len(item) if is_dict else len(item)
            if chars > max_chars or items > max_items:
                break
            inner = depth + 1
            if is_dict:
                for key, val in item.items():
                    stack.append((key, inner))
                    stack.append((val, inner))
            else:
                stack.extend([(x, inner) for x in item])
            continue
        else:
            chars += _scalar_chars(item, in_json)
        if chars > max_chars:
            break
    return Size(chars, items)


def _measure_all(values: Iterable[Any], max_chars: int, max_items: int) -> Size:
    chars = items = 0
    for value in values:
        size = measure(value, max_chars - chars, max_items - items)
        chars, items = chars + size.chars, items + size.items
        if chars > max_chars or items > max_items:
            break
    return Size(chars, items)


def _text_size(parts: Iterable[Any], what: str, already: int = 0) -> int:
    """The length of the text of `parts` joined (plus `already` characters), refused past
    MAX_VALUE_CHARS before any of it is built."""
    size = _measure_all(parts, MAX_VALUE_CHARS - already, UNLIMITED)
    check_size(already + size.chars, MAX_VALUE_CHARS, what)
    return already + size.chars


SEQUENCE_UNIT = "items or characters"


def _sequence_length(x: Any) -> int:
    """What `+`, `*` and sum() copy from a sequence operand: its characters or items (not
    its text's size: `_built` measures the result, once it exists)."""
    return len(x) if isinstance(x, str | list | tuple) else 0


def _pay(
    operands: Iterable[Any], base: int = 1, capped: bool = False, sorting: bool = False
) -> None:
    """Charge an operation on `operands`: `base` + what handling them costs (`sorting`:
    times log2(items)/2). `capped`: they are also refused past MAX_VALUE_CHARS together, as
    the arguments of calls and filters are. Sizing stops where the budget would, so sizing
    a value costs no more than the operation is charged."""
    budget = _current()
    left = max(budget.left(), 0)
    max_chars = (left + 1) * CHARS_PER_UNIT
    size = _measure_all(operands, min(max_chars, MAX_VALUE_CHARS) if capped else max_chars, left)
    factor = max(1, size.items.bit_length() // 2) if sorting else 1
    budget.charge(base + size.cost * factor)
    if capped:
        check_size(size.chars, MAX_VALUE_CHARS, "The text of a call's or filter's arguments")


def _built(value: Any) -> Any:
    """Refuse a newly built value past MAX_VALUE_CHARS; charge its items (building them, and
    sizing them here, visits each) and count its characters against the rendering's total;
    hand out a lazy result (map, select...) charged per item as it is read."""
    if isinstance(value, Iterator):
        return _charged(value)
    if isinstance(value, MappingView | range):
        return value  # d.items(), range(n): lazy views, nothing copied
    budget = _current()
    size = measure(value, MAX_VALUE_CHARS, max(budget.left(), 0))
    check_size(size.chars, MAX_VALUE_CHARS, "A value the template built")
    budget.charge(size.items)
    budget.build(max(size.chars, 1))
    return value


def _charged(items: Iterable[Any]) -> Iterator[Any]:
    for item in items:
        _charge()
        yield item


def _finalize(value: Any) -> Any:
    """Every {{ value }}: size-checked, and an undefined hidden in a list or dict (an unsafe
    attribute picked by map(), say) fails as it would on its own instead of printing."""
    stack, seen = [value], 0
    while stack and seen < 10_000:
        item = stack.pop()
        seen += 1
        if isinstance(item, Undefined):
            str(item)  # StrictUndefined: raises UndefinedError or SecurityError
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    if isinstance(value, str):
        _current().build(1)  # no new text; one more reference held by captured output
        check_size(len(value), MAX_VALUE_CHARS, "A printed value")
        return value
    size = measure(value)
    check_size(size.chars, MAX_VALUE_CHARS, "A printed value")
    _charge(size.items)  # str() of a container visits every item
    _current().build(max(size.chars, 1))
    return value


def _checked_join(parts: Iterable[Any]) -> str:
    """Joins captured output ({% set %} blocks, macro bodies) after checking its size."""
    parts = list(parts)
    _current().build(_text_size(parts, "Captured output"))
    return "".join(parts)


def _safe_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise TemplateRefused(
            f"range() of {len(rng)} items; templates may loop over at most {MAX_RANGE}.",
            code="template_too_expensive",
        )
    return rng


def _checked_mul(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int):
        _check_int_bits(left.bit_length() + right.bit_length())
    else:
        count = right if isinstance(right, int) else left if isinstance(left, int) else 1
        copied = max(_sequence_length(left), _sequence_length(right)) * max(count, 0)
        check_size(copied, MAX_VALUE_CHARS, "A sequence repeated by '*'", SEQUENCE_UNIT)
    return operator.mul(left, right)


def _checked_pow(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        _check_int_bits(left.bit_length() * right)
    if isinstance(left, float) or isinstance(right, float):
        try:
            return math.pow(left, right)
        except (OverflowError, ValueError) as exc:
            raise TemplateRefused(f"Template arithmetic failed: {exc}.") from None
    return operator.pow(left, right)


def _checked_add(left: Any, right: Any) -> Any:
    copied = _sequence_length(left) + _sequence_length(right)
    check_size(copied, MAX_VALUE_CHARS, "A sequence joined by '+'", SEQUENCE_UNIT)
    return operator.add(left, right)


def _check_int_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise TemplateRefused(
            f"Template arithmetic on numbers above {MAX_INT_BITS} bits.",
            code="template_too_expensive",
        )


def _no_percent_format(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        raise TemplateRefused(
            "'%' string formatting is not allowed in templates.", code="template_unsafe"
        )
    return operator.mod(left, right)


def _operands(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> list:
    # A pass_context / pass_environment function's first argument is Jinja's, not a value.
    skip = 1 if hasattr(fn, "jinja_pass_arg") else 0
    return [*args[skip:], *kwargs.values()]


def _keep_jinja_marker(wrapper: Callable[..., Any], fn: Callable[..., Any], name: str) -> None:
    # Keep Jinja's pass_context / pass_environment markers so arguments line up.
    if hasattr(fn, "jinja_pass_arg"):
        wrapper.jinja_pass_arg = fn.jinja_pass_arg  # type: ignore[attr-defined]
    wrapper.__name__ = name


def _bounded_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if name in CONSTANT_TIME_FILTERS:
            _charge()
        else:
            _pay(_operands(fn, args, kwargs), capped=True, sorting=name in SORTING_FILTERS)
        return _built(fn(*args, **kwargs))

    _keep_jinja_marker(wrapper, fn, name)
    return wrapper


def _charged_test(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """A test (`x is in(big)`, `a is eq(b)`) costs what a comparison does: its operands."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _pay(_operands(fn, args, kwargs), base=0)
        return fn(*args, **kwargs)

    _keep_jinja_marker(wrapper, fn, name)
    return wrapper


COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gteq": operator.ge,
    "lt": operator.lt,
    "lteq": operator.le,
    "in": lambda left, right: left in right,
    "notin": lambda left, right: left not in right,
}


def _compared(op: str, left: Any, right: Any) -> list[Any]:
    """The operands a comparison may walk: a dict or set lookup hashes the key only; two
    strings compare their lengths first, then at most the shorter one."""
    if op in ("in", "notin") and isinstance(right, dict | set | frozenset | KeysView | ItemsView):
        return [left]
    if op in ("eq", "ne") and isinstance(left, str) and isinstance(right, str):
        return [left if len(left) <= len(right) else right]
    return [left, right]


class _GuardExtension(Extension):
    """Holds the iteration guard that every `for` loop is rewritten to pass through."""

    identifier = "adaptd.guard"

    def iterate(self, iterable: Iterable[Any]) -> Iterator[Any]:
        return _charged(iterable)

    def compare(self, left: Any, *operations: Any) -> Any:
        """`a == b`, `x in y`, `a < b < c`: each comparison charged by its operands (all of
        a chain's operands are evaluated first)."""
        result: Any = True
        for op, right in zip(operations[::2], operations[1::2], strict=True):
            _pay(_compared(op, left, right), base=0)
            result = COMPARISONS[op](left, right)
            if not result:
                return result
            left = right
        return result

    def slice(self, value: Any, start: Any, stop: Any, step: Any) -> Any:
        """`value[a:b:c]` copies what it selects: charged by the copy's length first."""
        cut = slice(start, stop, step)
        if isinstance(value, str | list | tuple):
            copied = len(range(*cut.indices(len(value))))
            _charge(1 + (copied // CHARS_PER_UNIT if isinstance(value, str) else copied))
        else:
            _charge()
        return _built(self.environment.getitem(value, cut))

    def concat(self, *parts: Any) -> str:
        total = _text_size(parts, "The result of '~'")
        _charge(1 + total // CHARS_PER_UNIT)
        _current().build(total)
        return "".join(str(p) for p in parts)


class _Rewrite(NodeTransformer):
    """Routes every `for` iterable, `~`, comparison and slice through the guard extension
    (Jinja compiles comparisons and slices to plain Python, which the sandbox never sees)."""

    def _guard(self, method: str) -> nodes.ExtensionAttribute:
        return nodes.ExtensionAttribute(_GuardExtension.identifier, method)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Call(self._guard("iterate"), [node.iter], [], None, None)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Call(self._guard("concat"), list(node.nodes), [], None, None)

    def visit_Compare(self, node: nodes.Compare) -> nodes.Node:
        self.generic_visit(node)
        args: list[nodes.Expr] = [node.expr]
        for operand in node.ops:
            args += [nodes.Const(operand.op), operand.expr]
        return nodes.Call(self._guard("compare"), args, [], None, None)

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Node:
        self.generic_visit(node)
        if not isinstance(node.arg, nodes.Slice):
            return node
        bounds = [node.arg.start, node.arg.stop, node.arg.step]
        args = [node.node, *(b if b is not None else nodes.Const(None) for b in bounds)]
        return nodes.Call(self._guard("slice"), args, [], None, None)


class SafeEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "-", "/", "//", "%"})
    intercepted_unops = frozenset({"-", "+"})

    def __init__(self) -> None:
        super().__init__(
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            extensions=[_GuardExtension],
            finalize=_finalize,  # every {{ value }} is checked before it becomes text
        )
        self.concat = _checked_join  # type: ignore[method-assign]
        self.globals.clear()
        self.globals["range"] = _safe_range
        self.filters = {
            name: _bounded_filter(name, FILTERS[name]) for name in SAFE_FILTERS if name in FILTERS
        }
        self.filters["replace"] = _bounded_filter("replace", _bounded_replace)
        self.filters["indent"] = _bounded_filter("indent", _bounded_indent)
        self.filters["join"] = _bounded_filter("join", _bounded_join)
        self.filters["tojson"] = _bounded_filter("tojson", _bounded_tojson)
        self.filters["string"] = _bounded_filter("string", _bounded_string)
        self.filters["sum"] = _bounded_filter("sum", _bounded_sum)
        self.tests = {name: _charged_test(name, fn) for name, fn in self.tests.items()}
        self.binop_table = {
            **self.binop_table,
            "*": _checked_mul,
            "**": _checked_pow,
            "+": _checked_add,
            "%": _no_percent_format,
        }

    # -- compile time ----------------------------------------------------------------------
    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        check_tree(tree)
        return _Rewrite().visit(tree)

    # -- run time --------------------------------------------------------------------------
    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if isinstance(obj, str):
            return attr in SAFE_STR_METHODS
        if isinstance(obj, dict):
            return attr in SAFE_DICT_METHODS
        if isinstance(obj, list | tuple):
            return attr in SAFE_LIST_METHODS
        if isinstance(obj, LoopContext):
            return attr in SAFE_LOOP_ATTRS
        return False

    def wrap_str_format(self, value: Any) -> None:
        return None  # str.format takes width arguments that allocate: never offered

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        guard = __self.extensions[_GuardExtension.identifier]
        if getattr(__obj, "__self__", None) is guard:
            return __context.call(__obj, *args, **kwargs)  # the guards charge themselves
        _pay([*args, *kwargs.values()], capped=True)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str | list | tuple):  # big.count(x), text.find(y): O(len)
            _pay([owner], base=0)
        if isinstance(__obj, LoopContext) and args:
            # `loop(items)` in a recursive for: its items pass the same per-iteration
            # charge as a plain loop's (the compiled recursion bypasses the For rewrite).
            args = (guard.iterate(args[0]), *args[1:])  # type: ignore[attr-defined]
        return _built(super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _pay([left, right])  # numbers cost 1; `+` and `*` on sequences copy them
        return _built(self.binop_table[operator](left, right))

    def call_unop(self, context: Any, operator: str, arg: Any) -> Any:
        _charge()
        return self.unop_table[operator](arg)


def _bounded_replace(s: Any, old: str, new: str, count: int | None = None) -> str:
    s, old, new = str(s), str(old), str(new)
    hits = s.count(old) if old else len(s) + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    check_size(len(s) + hits * max(len(new) - len(old), 0), MAX_VALUE_CHARS, "replace's result")
    return s.replace(old, new, -1 if count is None else count)


def _bounded_indent(s: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    if isinstance(width, int | str):  # anything else fails in the filter itself
        check_size(len(width) if isinstance(width, str) else width, MAX_INDENT, "indent's width")
    check_size(measure(s).chars, MAX_VALUE_CHARS, "indent's text")
    s = str(s)
    pad = len(width) if isinstance(width, str) else max(int(width), 0)
    check_size(len(s) + (s.count("\n") + 1) * pad, MAX_VALUE_CHARS, "indent's result")
    return FILTERS["indent"](s, width, first, blank)


def _mapped(environment: Any, value: Any, attribute: str | int | None) -> list[Any]:
    items = list(value)
    if attribute is not None:
        getter = jinja_filters.make_attrgetter(environment, attribute)
        items = [getter(item) for item in items]
    return items


@pass_eval_context
def _bounded_join(
    eval_ctx: Any, value: Any, d: Any = "", attribute: str | int | None = None
) -> str:
    """join, with the result's length (separators + each item's text) known first."""
    items = _mapped(eval_ctx.environment, value, attribute)
    separators = _text_size([d], "join's separator") * max(len(items) - 1, 0)
    check_size(separators, MAX_VALUE_CHARS, "join's result")
    _text_size(items, "join's result", already=separators)
    return jinja_filters.sync_do_join(eval_ctx, items, d)


@pass_eval_context
def _bounded_tojson(eval_ctx: Any, value: Any, indent: int | str | None = None) -> str:
    """tojson, with the JSON text's length (escapes and indentation included) known first."""
    width = 0
    if indent is not None:
        if isinstance(indent, bool) or not isinstance(indent, int | str):
            raise TemplateRefused("tojson indent must be a number of spaces.")
        width = len(indent) if isinstance(indent, str) else indent
        check_size(width, MAX_JSON_INDENT, "tojson's indent", "spaces")
        width = max(width, 0)
    json_chars = measure(value, in_json=True, indent=width).chars
    check_size(json_chars, MAX_VALUE_CHARS, "tojson's result")
    return jinja_filters.do_tojson(eval_ctx, value, indent)


def _bounded_string(value: Any) -> str:
    check_size(measure(value).chars, MAX_VALUE_CHARS, "string's result")
    return jinja_filters.soft_str(value)


@pass_environment
def _bounded_sum(
    environment: Any, iterable: Any, attribute: str | int | None = None, start: Any = 0
) -> Any:
    """sum; adding up lists copies the running total each time, so that cost is sized first."""
    items = _mapped(environment, iterable, attribute)
    if not isinstance(start, int | float) or any(not isinstance(x, int | float) for x in items):
        copies = (sum(_sequence_length(x) for x in items) + _sequence_length(start)) * len(items)
        if copies > MAX_SUM_COPIES:
            raise TemplateRefused(
                "sum() over these sequences would copy too much; simplify the template.",
                code="template_too_expensive",
            )
    return sum(items, start)


def check_tree(tree: nodes.Template) -> None:
    """Refuse what no legitimate prompt template needs, before anything runs."""
    for node_type, label in FORBIDDEN_NODES.items():
        if next(tree.find_all(node_type), None) is not None:
            raise TemplateRefused(f"'{label}' is not allowed in templates.", "template_unsafe")
    for name in tree.find_all(nodes.Name):
        if name.name in FORBIDDEN_NAMES or name.name.startswith("_"):
            raise TemplateRefused(
                f"'{name.name}' is not available in templates.", "template_unsafe"
            )
    for attr in tree.find_all(nodes.Getattr):
        if attr.attr.startswith("_"):
            raise TemplateRefused(f"Attribute '{attr.attr}' is not allowed.", "template_unsafe")
    for item in tree.find_all(nodes.Getitem):
        if isinstance(item.arg, nodes.Const) and str(item.arg.value).startswith("_"):
            raise TemplateRefused(f"Item '{item.arg.value}' is not allowed.", "template_unsafe")
    for const in tree.find_all(nodes.Const):
        # Dunder names as string literals only ever serve attribute walks (attr(), map()).
        if isinstance(const.value, str) and "__" in const.value:
            raise TemplateRefused(
                f"The string '{const.value[:40]}' is not allowed in templates.", "template_unsafe"
            )


_env = SafeEnvironment()


@lru_cache(maxsize=512)
def compile_template(source: str):
    """Parse, check and compile once per distinct text (versions are immutable)."""
    check_size(len(source), MAX_SOURCE_CHARS, f"Template text ({len(source)} characters)")
    try:
        # Compiling runs template code: Jinja folds constant expressions (a filter on a
        # literal, a printed literal) by calling the guarded filters and _finalize. That code
        # is charged to a budget of its own, bounded like a render; what it refuses Jinja
        # leaves to run at render time, under the render's budget.
        with _spending(RenderBudget()):
            return _env.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateRefused(
            f"Template syntax error on line {exc.lineno}: {exc.message}", "template_syntax_error"
        ) from None
    except TemplateError as exc:
        raise TemplateRefused(f"Template error: {exc}", "template_syntax_error") from None


@lru_cache(maxsize=512)
def undeclared_variables(source: str) -> frozenset[str]:
    """Names the template reads from its context (it is asked once per request)."""
    from jinja2 import meta

    compile_template(source)  # syntax and safety first, with their own messages
    with _spending(RenderBudget()):  # its code generator folds constants too
        return frozenset(meta.find_undeclared_variables(_env.parse(source)))


class MissingVariable(TemplateRefused):
    def __init__(self, name: str) -> None:
        super().__init__(f"Template variable '{name}' is not defined.", "missing_variable")
        self.name = name


def render(source: str, variables: dict[str, Any], budget: RenderBudget | None = None) -> str:
    """Render within the budget and output cap; every failure is a TemplateRefused. The
    budget is a fresh one, cancelled by the flag of an enclosing `cancelled_by`, unless
    given."""
    template = compile_template(source)
    try:
        with _spending(budget if budget is not None else RenderBudget(_cancel.get())):
            out: list[str] = []
            size = 0
            for chunk in template.generate(variables):
                size += len(chunk)
                check_size(size, MAX_OUTPUT_CHARS, "The rendered template")
                out.append(chunk)
            return "".join(out)
    except TemplateRefused:
        raise
    except SecurityError as exc:
        raise TemplateRefused(f"Unsafe template operation: {exc}", "template_unsafe") from None
    except UndefinedError as exc:
        missing = _missing_name(str(exc))
        if missing is not None and missing not in FORBIDDEN_NAMES:
            raise MissingVariable(missing) from None
        raise TemplateRefused(
            f"Template rendering failed: {exc}", "template_render_error"
        ) from None
    except RecursionError:
        raise TemplateRefused(
            "Template recursion is too deep.", code="template_too_expensive"
        ) from None
    except (MemoryError, OverflowError) as exc:
        raise too_large(f"Template exceeded a limit: {exc}") from None
    except Exception as exc:  # anything a template expression raises (TypeError, ...)
        raise TemplateRefused(
            f"Template rendering failed: {type(exc).__name__}: {exc}", "template_render_error"
        ) from None


def _missing_name(message: str) -> str | None:
    # StrictUndefined says "'name' is undefined" for a missing top-level variable.
    if message.startswith("'") and message.endswith("' is undefined"):
        return message[1 : -len("' is undefined")]
    return None
