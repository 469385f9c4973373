"""Reads scoped by tenant, in one place.

Every domain reads its tenant-owned rows through a `TenantRepository` subclass: the base
statement already carries `tenant == <caller's tenant>`, so a query built on it cannot
reach another tenant's rows (as polar's `get_readable_statement` does). Child rows (a
template's versions, a job's events) are read by the id of a parent row that came from a
repository. The worker and the reaper act on ids the API handed them and read unscoped.
"""

from collections.abc import Sequence
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

Row = TypeVar("Row")


def keyset_page(
    session: Session,
    statement: Select[Any],
    keys: Sequence[InstrumentedAttribute[Any]],
    after: Sequence[Any] | None,
    limit: int,
    *,
    descending: bool = True,
) -> tuple[list[Any], bool]:
    """One page of `statement` ordered by `keys` (all ascending or all descending), starting
    after the row whose key values are `after`; and whether more rows follow."""
    if after is not None:
        statement = statement.where(_beyond(keys, after, descending))
    order = [key.desc() if descending else key.asc() for key in keys]
    rows = list(session.scalars(statement.order_by(*order).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def _beyond(
    keys: Sequence[InstrumentedAttribute[Any]], values: Sequence[Any], descending: bool
) -> ColumnElement[bool]:
    # (k1, k2) beyond (v1, v2): k1 beyond v1, or k1 == v1 and k2 beyond v2 (portable SQL,
    # where row-value comparison is not).
    terms = []
    for i, (key, value) in enumerate(zip(keys, values, strict=True)):
        beyond = key < value if descending else key > value
        ties = [k == v for k, v in zip(keys[:i], values[:i], strict=True)]
        terms.append(and_(*ties, beyond) if ties else beyond)
    return or_(*terms) if len(terms) > 1 else terms[0]


class TenantRepository(Generic[Row]):
    """The rows of `model` (a table with `id` and `tenant` columns) one tenant may read."""

    model: ClassVar[type]

    def __init__(self, session: Session, tenant: str) -> None:
        self.session = session
        self.tenant = tenant

    def scoped(self, statement: Select[Any]) -> Select[Any]:
        """`statement` (which selects from or joins `model`) limited to the tenant's rows."""
        return statement.where(self.model.tenant == self.tenant)

    def readable_statement(self) -> Select[tuple[Row]]:
        return self.scoped(select(self.model))

    def get(self, id: str) -> Row | None:
        return self.find(self.model.id == id)

    def find(self, *conditions: ColumnElement[bool]) -> Row | None:
        return self.session.scalar(self.readable_statement().where(*conditions))

    def all(self, *conditions: ColumnElement[bool], order_by: Sequence[Any] = ()) -> list[Row]:
        statement = self.readable_statement().where(*conditions).order_by(*order_by)
        return list(self.session.scalars(statement))

    def count(self, *conditions: ColumnElement[bool]) -> int:
        statement = self.scoped(select(func.count()).select_from(self.model)).where(*conditions)
        return self.session.scalar(statement) or 0

    def list_page(
        self,
        *conditions: ColumnElement[bool],
        keys: Sequence[InstrumentedAttribute[Any]],
        after: Sequence[Any] | None,
        limit: int,
        descending: bool = True,
    ) -> tuple[list[Row], bool]:
        statement = self.readable_statement().where(*conditions)
        return keyset_page(self.session, statement, keys, after, limit, descending=descending)
