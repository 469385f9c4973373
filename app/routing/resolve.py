"""The one routing point: a request's `model` string -> the variant that serves it.

    "smollm2-135m-instruct"            the base model, no template
    "ft:<base>:<suffix>:<job>"         a registered LoRA adapter
    "tmpl:<name>[@version|@tag]"       a template version, on the model that version names
    "<alias>"                          whichever variant the tenant's alias points to now

Everything downstream (prompt building, the engine, evaluations) takes a Variant.
"""

from dataclasses import dataclass, replace

from sqlalchemy.orm import Session

from app.aliases import service as aliases
from app.engine.adapters import AdapterRef
from app.errors import ModelNotFound
from app.model_refs import ADAPTER_PREFIX, TEMPLATE_PREFIX, ModelKind, VariantCheck
from app.registry import service as registry
from app.settings import get_settings
from app.templates import service as templates
from app.templates.rendering import ResolvedTemplate


@dataclass(frozen=True)
class Variant:
    model: str  # the name the response reports: the concrete variant, never the alias
    kind: str  # base | adapter | template
    adapter: AdapterRef | None = None
    template: ResolvedTemplate | None = None
    alias: str | None = None


def resolve(
    session: Session,
    tenant: str,
    model: str,
    base_name: str,
    *,
    count_alias: bool = True,
    follow_aliases: bool = True,
) -> Variant:
    """`follow_aliases=False` resolves concrete variants only: what a template runs on and
    what an alias targets (an alias never points to another alias)."""
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
        resolved = templates.resolve_reference(session, tenant, model.removeprefix(TEMPLATE_PREFIX))
        if resolved is None:
            raise ModelNotFound(model)
        # The template runs on the model its version names: the base, or an adapter.
        inner = resolve(session, tenant, resolved.model, base_name, follow_aliases=False)
        if inner.kind == "template":
            raise ModelNotFound(model)
        return Variant(model=model, kind="template", adapter=inner.adapter, template=resolved)
    if follow_aliases:
        target = aliases.pick_target(session, tenant, model, count=count_alias)
        if target is not None:
            variant = resolve(session, tenant, target, base_name, follow_aliases=False)
            return replace(variant, alias=model)
    raise ModelNotFound(model)


def alias_split(
    session: Session, tenant: str, model: str, base_name: str
) -> list[tuple[Variant, float]] | None:
    """Each concrete variant behind alias `model` with its weight, for a caller that picks per
    request itself (an evaluation, per example); None when `model` is no alias."""
    if model == base_name or model.startswith((ADAPTER_PREFIX, TEMPLATE_PREFIX)):
        return None
    targets = aliases.weighted_targets(session, tenant, model)
    if targets is None:
        return None
    return [
        (replace(resolve(session, tenant, t, base_name, follow_aliases=False), alias=model), w)
        for t, w in targets
    ]


def model_kinds(session: Session, tenant: str, base_name: str) -> ModelKind:
    """The check the templates and aliases write paths take: a concrete variant's kind."""
    return lambda model: resolve(session, tenant, model, base_name, follow_aliases=False).kind


def variant_checks(session: Session, tenant: str, base_name: str) -> VariantCheck:
    """The check evaluations take: the model names a variant (an alias counts no traffic)."""

    def check(model: str) -> None:
        resolve(session, tenant, model, base_name, count_alias=False)

    return check
