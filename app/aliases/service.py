"""Aliases: stable names over variants, weighted splits, versioned repointing."""

import random
from collections.abc import Callable

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.aliases.models import Alias, AliasCounter, AliasVersion
from app.aliases.repository import AliasRepository
from app.aliases.schemas import AliasRead, AliasTarget, AliasVersionRead
from app.db import unix_time
from app.errors import BadRequest, Conflict, ModelNotFound, NotFound
from app.ids import new_id
from app.model_refs import ADAPTER_PREFIX, TEMPLATE_PREFIX, ModelKind, ReferencesTo

_rng = random.SystemRandom()


def get(session: Session, tenant: str, name: str) -> Alias:
    row = AliasRepository(session, tenant).by_name(name)
    if row is None:
        raise NotFound(f"No alias named '{name}'.", param="name", code="alias_not_found")
    return row


def _version(session: Session, alias: Alias, version: int) -> AliasVersion | None:
    return session.scalar(
        select(AliasVersion).where(
            AliasVersion.alias_id == alias.id, AliasVersion.version == version
        )
    )


def _check_targets(model_kind: ModelKind, targets: list[AliasTarget]) -> None:
    """Every target must be a servable, concrete variant now. `model_kind` (from the routing
    layer) does not follow aliases, so another alias's name is refused as unknown."""
    for i, target in enumerate(targets):
        try:
            model_kind(target.model)
        except ModelNotFound:
            raise BadRequest(
                f"Target '{target.model}' does not exist or you do not have access to it.",
                param=f"targets.{i}.model",
                code="model_not_found",
            ) from None


def read(session: Session, alias: Alias) -> AliasRead:
    current = _version(session, alias, alias.current_version)
    assert current is not None
    counts = session.scalars(select(AliasCounter).where(AliasCounter.alias_id == alias.id))
    return AliasRead(
        id=alias.id,
        name=alias.name,
        version=alias.current_version,
        targets=[AliasTarget(**t) for t in current.targets],
        requests={c.model: c.requests for c in counts},
        created_at=unix_time(alias.created_at),
    )


def create(
    session: Session,
    tenant: str,
    base_name: str,
    name: str,
    targets: list[AliasTarget],
    model_kind: ModelKind,
) -> Alias:
    if name == base_name or name.startswith((ADAPTER_PREFIX, TEMPLATE_PREFIX)):
        raise BadRequest(
            f"'{name}' is reserved for a model name.", param="name", code="reserved_name"
        )
    _check_targets(model_kind, targets)
    alias = Alias(id=new_id("alias_"), tenant=tenant, name=name, current_version=1)
    session.add(alias)
    session.add(
        AliasVersion(alias_id=alias.id, version=1, targets=[t.model_dump() for t in targets])
    )
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"An alias named '{name}' already exists.", param="name") from None
    return alias


def repoint(
    session: Session, tenant: str, name: str, targets: list[AliasTarget], model_kind: ModelKind
) -> Alias:
    alias = get(session, tenant, name)
    _check_targets(model_kind, targets)
    return _add_version(session, alias, [t.model_dump() for t in targets])


def rollback(
    session: Session, tenant: str, name: str, version: int | None, model_kind: ModelKind
) -> Alias:
    alias = get(session, tenant, name)
    wanted = version if version is not None else alias.current_version - 1
    old = _version(session, alias, wanted) if wanted >= 1 else None
    if old is None:
        raise BadRequest(
            f"Alias '{name}' has no version {wanted} to roll back to.",
            param="version",
            code="alias_version_not_found",
        )
    # The old version's targets may have been deleted since: checked as a fresh repoint is,
    # so the alias never points at something that cannot serve.
    missing = [t["model"] for t in old.targets if not _exists(model_kind, t["model"])]
    if missing:
        raise Conflict(
            f"Version {wanted} of alias '{name}' targets {', '.join(missing)}, which no longer "
            "exist(s); repoint the alias instead.",
            param="version",
            code="rollback_target_missing",
        )
    return _add_version(session, alias, old.targets)


def _exists(model_kind: ModelKind, model: str) -> bool:
    try:
        model_kind(model)
    except ModelNotFound:
        return False
    return True


def _add_version(session: Session, alias: Alias, targets: list[dict]) -> Alias:
    """Claims the next number with a compare-and-set on current_version before writing the
    version row, so concurrent repoints never share a number and a reader always sees one
    whole version."""
    for _ in range(5):
        current = alias.current_version
        claimed = session.execute(
            update(Alias)
            .where(Alias.id == alias.id, Alias.current_version == current)
            .values(current_version=current + 1)
        ).rowcount
        if claimed == 1:
            session.add(AliasVersion(alias_id=alias.id, version=current + 1, targets=targets))
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                session.refresh(alias)
                continue
            session.refresh(alias)
            return alias
        session.rollback()
        session.refresh(alias)
    raise Conflict("The alias is being repointed concurrently; retry.", param="name")


def history(session: Session, tenant: str, name: str) -> list[AliasVersionRead]:
    alias = get(session, tenant, name)
    rows = session.scalars(
        select(AliasVersion).where(AliasVersion.alias_id == alias.id).order_by(AliasVersion.version)
    )
    return [
        AliasVersionRead(
            version=r.version,
            targets=[AliasTarget(**t) for t in r.targets],
            created_at=unix_time(r.created_at),
        )
        for r in rows
    ]


def remove(session: Session, tenant: str, name: str, references_to: ReferencesTo) -> None:
    alias = get(session, tenant, name)
    pending = references_to(name).pending
    if pending:
        raise Conflict(
            f"Alias '{name}' is used by {', '.join(pending)}, not finished yet; delete it "
            "once they finish.",
            param="name",
            code="alias_in_use",
        )
    session.execute(delete(AliasCounter).where(AliasCounter.alias_id == alias.id))
    session.execute(delete(AliasVersion).where(AliasVersion.alias_id == alias.id))
    session.delete(alias)
    session.commit()


def list_aliases(session: Session, tenant: str) -> list[Alias]:
    return AliasRepository(session, tenant).all_by_name()


def pointing_to(session: Session, tenant: str, matches: Callable[[str], bool]) -> list[str]:
    """Names of the aliases whose current version has a target `matches` accepts (checked
    before a template or adapter is deleted)."""
    return AliasRepository(session, tenant).pointing_to(matches)


def weighted_targets(session: Session, tenant: str, name: str) -> list[tuple[str, float]] | None:
    """(model, weight) of each target of the alias's current version (None: no such alias)."""
    current = AliasRepository(session, tenant).current_targets(name)
    if current is None:
        return None
    return [(t["model"], t["weight"]) for t in current[1]]


def pick_target(session: Session, tenant: str, name: str, *, count: bool = True) -> str | None:
    """The concrete model for one request through alias `name` (None: no such alias)."""
    current = AliasRepository(session, tenant).current_targets(name)
    if current is None:
        return None
    alias_id, targets = current
    chosen = _rng.choices([t["model"] for t in targets], weights=[t["weight"] for t in targets])[0]
    if count:
        _count(session, alias_id, chosen)
    return chosen


def _count(session: Session, alias_id: str, model: str) -> None:
    bump = (
        update(AliasCounter)
        .where(AliasCounter.alias_id == alias_id, AliasCounter.model == model)
        .values(requests=AliasCounter.requests + 1)
    )
    if session.execute(bump).rowcount == 0:
        try:
            with session.begin_nested():
                session.add(AliasCounter(alias_id=alias_id, model=model, requests=1))
        except IntegrityError:
            session.execute(bump)  # another request inserted it first
    session.commit()
