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
  lone surrogate with `code: invalid_text` and `param` = the path to it.
- `check_text(value, param)`: the same walk, for data that arrives another way (JSONL).
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


def _joined(path: tuple[str | int, ...]) -> str | None:
    return ".".join(str(p) for p in path) or None


def check_text(value: Any, param: str | None = None) -> None:
    """Refuse (400 invalid_text) the first string, key or value, in a JSON-like value that is
    not valid Unicode. Iterative, so nesting depth costs nothing but time."""
    base: tuple[str | int, ...] = (param,) if param else ()
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, base)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            at = surrogate_at(item)
            if at is not None:
                where = _joined(path)
                raise BadRequest(
                    f"{where or 'Request'}: text must be valid Unicode; it holds a lone "
                    f"UTF-16 surrogate (U+{ord(item[at]):04X}) at character {at}.",
                    param=where,
                    code="invalid_text",
                )
        elif isinstance(item, dict):
            for key, val in item.items():
                if isinstance(key, str) and surrogate_at(key) is not None:
                    stack.append((key, path))
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
