"""Values as they may cross the protocol edge: integers a database column can hold, seeds
that fit in 64 bits, and text that is valid Unicode.

JSON allows integers of any size and `"\\ud800"` (a lone UTF-16 surrogate, which no UTF-8
encoder, database driver or tokenizer accepts). Checked here, once, they become a 400 that
names the field instead of an error deep inside a query or the engine:

- `Version`, `DbInt`, `Seed`: annotated ints for schemas and path/query parameters;
  `db_int(text)` for numbers parsed out of strings (`tmpl:name@3`, cursors). The tables'
  integer columns are SQLAlchemy `Integer`, 32-bit in PostgreSQL, so that is the bound
  (a larger value in a query is "integer out of range" there, an OverflowError in SQLite
  past 64 bits).
- `RequestModel`: the base of every request body; before its fields are validated it walks
  the raw body (keys and values, whatever the fields' types, `Any` included) and refuses a
  lone surrogate, or a NUL character (U+0000: PostgreSQL's text columns cannot hold it,
  psycopg refuses it in any query, while SQLite stores it; refused on both, so the two
  deployments answer alike), with `code: invalid_text` and `param` = the path to it.
- `check_text(value, param)`: the same walk, for data that arrives another way (path and
  query parameters, form fields: app/protocol/params.py); `text_problem(text)` says what is
  wrong with one string, for messages of their own (a JSONL line's problem).
"""

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, model_validator

from app.errors import BadRequest

DB_INT_MAX = 2**31 - 1  # an Integer column (PostgreSQL INTEGER)
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1  # what the engines' generators take

DbInt = Annotated[int, Field(ge=0, le=DB_INT_MAX)]
Version = Annotated[int, Field(ge=1, le=DB_INT_MAX)]
# A sampling seed: 64-bit, with room for the per-choice offset (seed + index, n <= 8).
Seed = Annotated[int, Field(ge=SEED_MIN, le=SEED_MAX - 8)]


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# Out: the database keeps naive UTC times; on the wire a date-time names its offset
# (RFC 3339, as the OpenAPI "date-time" format requires): "2026-11-28T09:00:52Z".
UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]

_SURROGATE = re.compile("[\ud800-\udfff]")
# What no text column stores on both databases: NUL, and lone UTF-16 surrogates.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def db_int(text: str) -> int | None:
    """`text` as a non-negative integer a database column can hold; None if it is not one
    (not ASCII digits — "²".isdigit() is true — or too large)."""
    if not (text.isascii() and text.isdigit()):
        return None
    if len(text) > len(str(DB_INT_MAX)):  # past it anyway; int() of a huge string is slow
        return None
    value = int(text)
    return value if value <= DB_INT_MAX else None


def surrogate_at(text: str) -> int | None:
    """Where `text` holds a lone UTF-16 surrogate, or None."""
    if text.isascii():
        return None
    found = _SURROGATE.search(text)
    return found.start() if found is not None else None


def unstorable_at(text: str) -> int | None:
    """Where `text` holds a NUL or a lone UTF-16 surrogate, or None."""
    if text.isascii():
        return text.find("\x00") if "\x00" in text else None
    found = _UNSTORABLE.search(text)
    return found.start() if found is not None else None


def text_problem(text: str) -> str | None:
    """What makes `text` unstorable ("a NUL character (U+0000) at character 3"), or None."""
    at = unstorable_at(text)
    if at is None:
        return None
    if text[at] == "\x00":
        return f"a NUL character (U+0000) at character {at}"
    return f"a lone UTF-16 surrogate (U+{ord(text[at]):04X}) at character {at}"


def _joined(path: tuple[str | int, ...]) -> str | None:
    return ".".join(str(p) for p in path) or None


def refuse_text(text: str, param: str | None) -> None:
    """Raise the 400 (invalid_text) for `text` if it holds an unstorable character."""
    problem = text_problem(text)
    if problem is not None:
        raise BadRequest(
            f"{param or 'Request'}: text must be valid Unicode without NUL characters (which "
            f"PostgreSQL cannot store); it holds {problem}.",
            param=param,
            code="invalid_text",
        )


def check_text(value: Any, param: str | None = None) -> None:
    """Refuse (400 invalid_text) the first string, key or value, in a JSON-like value that
    holds a NUL or is not valid Unicode. Iterative, so nesting depth costs nothing but time."""
    base: tuple[str | int, ...] = (param,) if param else ()
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, base)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            refuse_text(item, _joined(path))
        elif isinstance(item, dict):
            for key, val in item.items():
                if isinstance(key, str) and unstorable_at(key) is not None:
                    stack.append((key, path))  # reported at the object that holds it
                stack.append((val, (*path, key)))
        elif isinstance(item, list | tuple):
            stack.extend((val, (*path, i)) for i, val in enumerate(item))


class RequestModel(BaseModel):
    """Base of request bodies: the raw body's text is checked before any field."""

    @model_validator(mode="before")
    @classmethod
    def _valid_text(cls, data: Any) -> Any:
        if isinstance(data, dict | list):
            check_text(data)
        return data
