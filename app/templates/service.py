"""Templates: immutable versions, movable tags, validation on save, resolution for serving.

A version is never changed after it is written; `POST /{name}/versions` adds the next one.
Declared request variables are kept in the version's `params` JSON under "variables" (the
table's other JSON columns hold the examples and the selection rule).
"""

import re
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.engine.prompts import encode, literal, render_chat
from app.engine.protocol import InferenceEngine
from app.engine.structured import OutputConstraint
from app.errors import BadRequest, Conflict, ModelNotFound, NotFound
from app.ids import new_id
from app.model_refs import TEMPLATE_PREFIX, ModelKind, ReferencesTo
from app.protocol.structured import from_structured_outputs
from app.protocol.values import db_int
from app.templates import sandbox, selection
from app.templates.models import Template, TemplateTag, TemplateVersion
from app.templates.rendering import (
    ResolvedTemplate,
    chat_messages,
    completion_text,
    defaults_of,
)
from app.templates.repository import TemplateRepository
from app.templates.schemas import (
    RESERVED_TAGS,
    TAG_PATTERN,
    ExampleSelection,
    GenerationDefaults,
    TemplatePatch,
    TemplateRead,
    TemplateSpec,
    TemplateSummary,
    TemplateVersionRead,
)

__all__ = ["ResolvedTemplate", "resolve_reference"]

VARIABLES_KEY = "variables"


# -- reading -------------------------------------------------------------------------------
def get(session: Session, tenant: str, name: str) -> Template:
    row = TemplateRepository(session, tenant).by_name(name)
    if row is None:
        raise NotFound(f"No template named '{name}'.", param="name", code="template_not_found")
    return row


def get_version(session: Session, template: Template, version: int) -> TemplateVersion:
    row = session.scalar(
        select(TemplateVersion).where(
            TemplateVersion.template_id == template.id, TemplateVersion.version == version
        )
    )
    if row is None:
        raise NotFound(
            f"Template '{template.name}' has no version {version}.",
            param="version",
            code="template_version_not_found",
        )
    return row


def tags_of(session: Session, template: Template) -> dict[str, int]:
    rows = session.scalars(
        select(TemplateTag).where(TemplateTag.template_id == template.id).order_by(TemplateTag.tag)
    )
    return {r.tag: r.version for r in rows}


def spec_of(row: TemplateVersion) -> TemplateSpec:
    params = dict(row.params or {})
    variables = params.pop(VARIABLES_KEY, {}) or {}
    return TemplateSpec(
        system_prompt=row.system_prompt,
        instruction=row.instruction,
        examples=row.examples,
        example_selection=ExampleSelection(**(row.example_selection or {})),
        params=GenerationDefaults(**params),
        variables=variables,
        model=row.model,
        output_constraint=row.output_constraint,
    )


def version_read(name: str, row: TemplateVersion) -> TemplateVersionRead:
    spec = spec_of(row)
    return TemplateVersionRead(
        name=name,
        version=row.version,
        model=row.model,
        system_prompt=spec.system_prompt,
        instruction=spec.instruction,
        examples=spec.examples,
        example_selection=spec.example_selection,
        params=spec.params,
        variables=spec.variables,
        output_constraint=spec.output_constraint or None,
        created_at=row.created_at,
    )


def read(session: Session, template: Template) -> TemplateRead:
    versions = list(
        session.scalars(
            select(TemplateVersion.version)
            .where(TemplateVersion.template_id == template.id)
            .order_by(TemplateVersion.version)
        )
    )
    latest = get_version(session, template, template.latest_version)
    return TemplateRead(
        id=template.id,
        name=template.name,
        latest_version=template.latest_version,
        versions=versions,
        tags=tags_of(session, template),
        created_at=template.created_at,
        latest=version_read(template.name, latest),
    )


def list_page(
    session: Session, tenant: str, after: str | None, limit: int
) -> tuple[list[TemplateSummary], bool]:
    """Ordered by name; `after` is the name of the last template of the previous page."""
    page, has_more = TemplateRepository(session, tenant).page(after, limit)
    models = dict(
        session.execute(
            select(TemplateVersion.template_id, TemplateVersion.model)
            .join(Template, Template.id == TemplateVersion.template_id)
            .where(
                TemplateVersion.template_id.in_([t.id for t in page]),
                TemplateVersion.version == Template.latest_version,
            )
        ).all()
    )
    summaries = [
        TemplateSummary(
            id=t.id,
            name=t.name,
            latest_version=t.latest_version,
            model=models.get(t.id, ""),
            tags=tags_of(session, t),
            created_at=t.created_at,
        )
        for t in page
    ]
    return summaries, has_more


def versions(session: Session, tenant: str, name: str) -> list[TemplateVersionRead]:
    template = get(session, tenant, name)
    rows = session.scalars(
        select(TemplateVersion)
        .where(TemplateVersion.template_id == template.id)
        .order_by(TemplateVersion.version)
    )
    return [version_read(template.name, r) for r in rows]


# -- resolving `name[@version|@tag]` -------------------------------------------------------
def parse_reference(reference: str) -> tuple[str, str | None]:
    name, sep, ref = reference.partition("@")
    return name, (ref if sep else None)


def find_version(
    session: Session, tenant: str, reference: str
) -> tuple[Template, TemplateVersion] | None:
    name, ref = parse_reference(reference)
    template = TemplateRepository(session, tenant).by_name(name)
    if template is None:
        return None
    if ref is None or ref == "latest":
        number = template.latest_version
    elif ref.isdigit():  # a version number (tags start with a letter)
        number = db_int(ref)
        if number is None:  # "²", or past what a version column holds: no such version
            return None
    else:
        number = session.scalar(
            select(TemplateTag.version).where(
                TemplateTag.template_id == template.id, TemplateTag.tag == ref
            )
        )
        if number is None:
            return None
    row = session.scalar(
        select(TemplateVersion).where(
            TemplateVersion.template_id == template.id, TemplateVersion.version == number
        )
    )
    return (template, row) if row is not None else None


def constraint_of(spec: TemplateSpec) -> OutputConstraint | None:
    """The version's default output constraint (400 invalid_response_format if malformed)."""
    return from_structured_outputs(spec.output_constraint or None, param="output_constraint")


def to_resolved(name: str, row: TemplateVersion) -> ResolvedTemplate:
    return resolved_from_spec(name, row.version, row.model, spec_of(row), row.embeddings)


def draft_of(name: str, model: str, spec: TemplateSpec) -> ResolvedTemplate:
    """An unsaved spec (already validated) as version 0, for the console's preview: built
    as saving and then resolving it would build it."""
    return resolved_from_spec(name, 0, model, spec, _embeddings_for(spec))


def resolved_from_spec(
    name: str, version: int, model: str, spec: TemplateSpec, embeddings: bytes | None
) -> ResolvedTemplate:
    return ResolvedTemplate(
        name=name,
        version=version,
        model=model,
        system_prompt=spec.system_prompt,
        instruction=spec.instruction,
        examples=spec.examples,
        rule=spec.example_selection.rule,
        k=spec.example_selection.k,
        params=spec.params.model_dump(exclude_none=True),
        variables=spec.variables,
        embeddings=embeddings,
        output_constraint=constraint_of(spec),
    )


def resolve_reference(session: Session, tenant: str, reference: str) -> ResolvedTemplate | None:
    """`name`, `name@3`, `name@production` -> the version it names now (None: no such)."""
    found = find_version(session, tenant, reference)
    if found is None:
        return None
    template, row = found
    return to_resolved(template.name, row)


# -- validation ----------------------------------------------------------------------------
def _refused(exc: sandbox.TemplateRefused, param: str) -> BadRequest:
    return BadRequest(f"{param}: {exc.message}", param=param, code=exc.code)


def _check_model(model_kind: ModelKind, model: str) -> None:
    try:
        kind = model_kind(model)
    except ModelNotFound:
        raise BadRequest(
            f"model: '{model}' is neither the base model nor one of your fine-tuned adapters.",
            param="model",
            code="model_not_found",
        ) from None
    if kind not in ("base", "adapter"):
        raise BadRequest(
            "model: a template runs on the base model or an adapter, not on another template.",
            param="model",
            code="invalid_model",
        )


def validate(spec: TemplateSpec, engine: InferenceEngine, model_kind: ModelKind) -> str:
    """Every check that can be made before a request arrives; raises a 400 naming the
    problem. Returns the model the version runs on (`model_kind`, from the routing layer,
    says what a model name is)."""
    model = spec.model or engine.name
    try:
        used = sandbox.undeclared_variables(spec.instruction)
    except sandbox.TemplateRefused as exc:
        raise _refused(exc, "instruction") from None
    example_fields = set().union(*(e.keys() for e in spec.examples)) if spec.examples else set()
    for name in sorted(used - {"input"}):
        if name not in spec.variables and name not in example_fields:
            raise BadRequest(
                f"instruction: the variable '{name}' is not `input`, not a field of any "
                "example and not declared in `variables`, so nothing can fill it.",
                param="instruction",
                code="template_undefined_variable",
            )
    for i, example in enumerate(spec.examples):
        for name in sorted(used - {"input"}):
            if name not in example and spec.variables.get(name) is None:
                raise BadRequest(
                    f"examples[{i}] has no field '{name}', which the instruction uses "
                    "(and the variable has no default).",
                    param=f"examples.{i}.{name}",
                    code="example_missing_field",
                )

    for i, example in enumerate(spec.examples):
        try:
            sandbox.render(spec.instruction, {**defaults_of(spec.variables), **example})
        except sandbox.TemplateRefused as exc:
            raise _refused(exc, f"examples.{i}") from None

    probe = _dry_run(spec, used)
    _check_fits(spec, engine, probe)
    constraint = constraint_of(spec)
    if constraint is not None:
        engine.check_constraint(constraint)  # compiles and can match, or a 400
    _check_model(model_kind, model)
    return model


def _dry_run(spec: TemplateSpec, used: frozenset[str]) -> str:
    """Render the request turn with placeholder values: catches unsafe or runaway templates
    (range(10**9), attribute walks built at run time) before anything is saved. Errors
    that depend on real request values (a variable meant to be a dict) are left for then."""
    context: dict[str, Any] = {name: "x" for name in used}
    context.update(defaults_of(spec.variables))
    context["input"] = "x"
    try:
        return sandbox.render(spec.instruction, context)
    except sandbox.TemplateRefused as exc:
        if exc.code in ("template_render_error", "missing_variable"):
            return ""
        raise _refused(exc, "instruction") from None


def _check_fits(spec: TemplateSpec, engine: InferenceEngine, probe: str) -> None:
    """With no examples and a one-letter input, the prompt plus max_tokens must fit."""
    messages, _ = chat_messages(spec.system_prompt, [], [{"role": "user", "content": probe}])
    chat_tokens = len(encode(engine.tokenizer, render_chat(engine.tokenizer, messages)))
    text = literal(engine.tokenizer, completion_text(spec.system_prompt, [], probe))
    text_tokens = len(encode(engine.tokenizer, text))
    needed = max(chat_tokens, text_tokens)
    completion = spec.params.max_tokens or 1
    if needed + completion > engine.context_window:
        if needed < engine.context_window:
            param = "params.max_tokens"
        else:
            param = "system_prompt" if len(spec.system_prompt) > len(probe) else "instruction"
        raise BadRequest(
            f"The prompt takes {needed} tokens with no examples and a one-letter input, plus "
            f"max_tokens {completion}: more than the model's context window of "
            f"{engine.context_window} tokens.",
            param=param,
            code="context_length_exceeded",
        )


def _embeddings_for(spec: TemplateSpec) -> bytes | None:
    # Only similar_k needs them; computed once here, never per request.
    if spec.example_selection.rule != "similar_k" or not spec.examples:
        return None
    return selection.compute_embeddings(spec.examples)


def _version_row(
    template_id: str, number: int, spec: TemplateSpec, model: str, vectors: bytes | None
) -> TemplateVersion:
    params = spec.params.model_dump(exclude_none=True)
    params[VARIABLES_KEY] = dict(spec.variables)
    return TemplateVersion(
        id=new_id("tmplv_"),
        template_id=template_id,
        version=number,
        system_prompt=spec.system_prompt,
        instruction=spec.instruction,
        examples=spec.examples,
        example_selection=spec.example_selection.model_dump(),
        params=params,
        model=model,
        embeddings=vectors,
        output_constraint=spec.output_constraint or None,
    )


# -- writing -------------------------------------------------------------------------------
def create(
    session: Session,
    tenant: str,
    engine: InferenceEngine,
    name: str,
    spec: TemplateSpec,
    model_kind: ModelKind,
) -> Template:
    if TemplateRepository(session, tenant).by_name(name) is not None:
        raise Conflict(f"A template named '{name}' already exists.", param="name")
    model = validate(spec, engine, model_kind)
    vectors = _embeddings_for(spec)
    template = Template(id=new_id("tmpl_"), tenant=tenant, name=name, latest_version=1)
    session.add(template)
    session.flush()
    session.add(_version_row(template.id, 1, spec, model, vectors))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"A template named '{name}' already exists.", param="name") from None
    return template


def add_version(
    session: Session,
    tenant: str,
    engine: InferenceEngine,
    name: str,
    patch: TemplatePatch,
    model_kind: ModelKind,
) -> TemplateVersion:
    template = get(session, tenant, name)
    latest = spec_of(get_version(session, template, template.latest_version))
    # Fields left out (or null) keep the newest version's value; `"model": null` goes back
    # to the base model.
    changes = {
        k: v
        for k, v in patch.model_dump(exclude_unset=True).items()
        if v is not None or k == "model"
    }
    spec = TemplateSpec(**{**latest.model_dump(), **changes})
    model = validate(spec, engine, model_kind)
    vectors = _embeddings_for(spec)  # before claiming the number: it can take a moment
    # Compare-and-set on latest_version claims the next number (on PostgreSQL the row lock
    # holds until commit); only then is the version row written.
    for _ in range(10):
        current = template.latest_version
        try:
            moved = session.execute(
                update(Template)
                .where(Template.id == template.id, Template.latest_version == current)
                .values(latest_version=current + 1)
            ).rowcount
            if moved == 1:
                row = _version_row(template.id, current + 1, spec, model, vectors)
                session.add(row)
                session.commit()
                return row
        except IntegrityError:
            pass
        session.rollback()
        session.refresh(template)
    raise Conflict("The template is being updated concurrently; retry.", param="name")


def move_tag(session: Session, tenant: str, name: str, tag: str, version: int) -> Template:
    if not re.fullmatch(TAG_PATTERN, tag) or tag in RESERVED_TAGS:
        raise BadRequest(
            f"tag: '{tag}' must start with a letter, then letters, digits, '_', '.', '-' "
            "(at most 64), and not be 'latest'.",
            param="tag",
            code="invalid_tag",
        )
    template = get(session, tenant, name)
    get_version(session, template, version)  # 404 when the version does not exist
    for _ in range(3):
        moved = session.execute(
            update(TemplateTag)
            .where(TemplateTag.template_id == template.id, TemplateTag.tag == tag)
            .values(version=version)
        ).rowcount
        if moved == 0:
            try:
                with session.begin_nested():
                    session.add(TemplateTag(template_id=template.id, tag=tag, version=version))
            except IntegrityError:
                continue  # created concurrently: update it on the next pass
        session.commit()
        return template
    raise Conflict("The tag is being moved concurrently; retry.", param="tag")


def remove_tag(
    session: Session, tenant: str, name: str, tag: str, references_to: ReferencesTo
) -> None:
    template = get(session, tenant, name)
    # An alias targeting `tmpl:<name>@<tag>` would stop serving without the tag.
    users = references_to(f"{TEMPLATE_PREFIX}{name}@{tag}").users()
    if users:
        raise Conflict(
            f"Tag '{tag}' of template '{name}' is used by {', '.join(users)}; repoint the "
            "aliases, or wait for the work to finish, first.",
            param="tag",
            code="tag_in_use",
        )
    gone = session.execute(
        delete(TemplateTag).where(TemplateTag.template_id == template.id, TemplateTag.tag == tag)
    ).rowcount
    if gone == 0:
        raise NotFound(f"Template '{name}' has no tag '{tag}'.", param="tag", code="tag_not_found")
    session.commit()


def running_on(session: Session, tenant: str, model: str) -> list[str]:
    """Names of the templates with a version that runs on `model`."""
    return TemplateRepository(session, tenant).running_on(model)


def remove(session: Session, tenant: str, name: str, references_to: ReferencesTo) -> None:
    template = get(session, tenant, name)
    refs = references_to(f"{TEMPLATE_PREFIX}{name}")
    users = [f"alias '{a}'" for a in refs.aliases] + refs.pending
    if users:
        raise Conflict(
            f"Template '{name}' is used by {', '.join(users)}; repoint the aliases, or wait "
            "for the work to finish, first.",
            param="name",
            code="template_in_use",
        )
    session.execute(delete(TemplateTag).where(TemplateTag.template_id == template.id))
    session.execute(delete(TemplateVersion).where(TemplateVersion.template_id == template.id))
    session.delete(template)
    session.commit()
