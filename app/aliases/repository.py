"""The aliases one tenant may read, with their current versions' targets."""

from collections.abc import Callable
from typing import Any

from sqlalchemy import Select, select

from app.aliases.models import Alias, AliasVersion
from app.repository import TenantRepository


class AliasRepository(TenantRepository[Alias]):
    model = Alias

    def by_name(self, name: str) -> Alias | None:
        return self.find(Alias.name == name)

    def all_by_name(self) -> list[Alias]:
        return self.all(order_by=(Alias.name,))

    def _current(self) -> Select[Any]:
        """(id, name, targets) of each alias's current version."""
        return self.scoped(
            select(Alias.id, Alias.name, AliasVersion.targets)
            .join(AliasVersion, AliasVersion.alias_id == Alias.id)
            .where(AliasVersion.version == Alias.current_version)
        )

    def current_targets(self, name: str) -> tuple[str, list[dict[str, Any]]] | None:
        """(alias id, targets of its current version), or None: no such alias."""
        row = self.session.execute(self._current().where(Alias.name == name)).first()
        return None if row is None else (row.id, row.targets)

    def pointing_to(self, matches: Callable[[str], bool]) -> list[str]:
        """Names of the aliases whose current version has a target `matches` accepts."""
        rows = self.session.execute(self._current()).all()
        return sorted(r.name for r in rows if any(matches(t["model"]) for t in r.targets))
