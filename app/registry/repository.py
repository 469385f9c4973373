"""The adapters one tenant may read."""

from app.registry.models import Adapter
from app.repository import TenantRepository


class AdapterRepository(TenantRepository[Adapter]):
    model = Adapter

    def by_name(self, name: str) -> Adapter | None:
        return self.find(Adapter.name == name)

    def all_by_age(self) -> list[Adapter]:
        return self.all(order_by=(Adapter.created_at,))
