"""The one routing point: a request's `model` string -> the variant that serves it.

    "smollm2-135m-instruct"            the base model, no template
    "ft:<base>:<suffix>:<job>"         a registered LoRA adapter
    "tmpl:<name>[@version|@tag]"       a template version, on the model that version names
    "<alias>"                          whichever variant the tenant's alias points to now

Everything downstream (prompt building, the engine, evaluations) takes a Variant.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from app.engine.adapters import AdapterRef
from app.errors import ModelNotFound
from app.registry import service as registry
from app.settings import get_settings

if TYPE_CHECKING:
    from app.templates.service import ResolvedTemplate

TEMPLATE_PREFIX = "tmpl:"
ADAPTER_PREFIX = "ft:"


@dataclass(frozen=True)
class Variant:
    model: str  # the name the response reports: the concrete variant, never the alias
    kind: str  # base | adapter | template
    adapter: AdapterRef | None = None
    template: "ResolvedTemplate | None" = None
    alias: str | None = None


def resolve(
    session: Session,
    tenant: str,
    model: str,
    base_name: str,
    *,
    count_alias: bool = True,
    _depth: int = 0,
) -> Variant:
    if model == base_name:
        return Variant(model=model, kind="base")
    if model.startswith(ADAPTER_PREFIX):
        row = registry.find_adapter(session, tenant, model)
        if row is None:
            raise ModelNotFound(model)
        return Variant(
            model=model,
            kind="adapter",
            adapter=registry.adapter_ref(row, get_settings().adapters_dir),
        )
    if model.startswith(TEMPLATE_PREFIX):
        from app.templates import service as templates

        resolved = templates.resolve_reference(session, tenant, model.removeprefix(TEMPLATE_PREFIX))
        if resolved is None:
            raise ModelNotFound(model)
        # The template runs on the model its version names: the base, or an adapter.
        inner = resolve(session, tenant, resolved.model, base_name, _depth=_depth + 1)
        if inner.kind == "template":
            raise ModelNotFound(model)
        return Variant(model=model, kind="template", adapter=inner.adapter, template=resolved)
    if _depth == 0:
        from app.aliases import service as aliases

        target = aliases.pick_target(session, tenant, model, count=count_alias)
        if target is not None:
            variant = resolve(session, tenant, target, base_name, _depth=1)
            return Variant(
                model=variant.model,
                kind=variant.kind,
                adapter=variant.adapter,
                template=variant.template,
                alias=model,
            )
    raise ModelNotFound(model)
