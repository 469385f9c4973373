"""The templates one tenant may read."""

from sqlalchemy import select

from app.repository import TenantRepository
from app.templates.models import Template, TemplateVersion


class TemplateRepository(TenantRepository[Template]):
    model = Template

    def by_name(self, name: str) -> Template | None:
        return self.find(Template.name == name)

    def page(self, after: str | None, limit: int) -> tuple[list[Template], bool]:
        """Ordered by name; `after` is the last name of the previous page."""
        return self.list_page(
            keys=(Template.name,),
            after=(after,) if after is not None else None,
            limit=limit,
            descending=False,
        )

    def running_on(self, model: str) -> list[str]:
        """Names of the templates with a version that runs on `model`."""
        statement = (
            select(Template.name)
            .join(TemplateVersion, TemplateVersion.template_id == Template.id)
            .where(TemplateVersion.model == model)
            .distinct()
        )
        return list(self.session.scalars(self.scoped(statement)))
