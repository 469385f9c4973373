"""Audit rows written in the same flush, hence the same transaction, as the change itself:
a change is never committed without its row, nor a row without its change.

One session hook for every process (API and workers) instead of a call in each service:
the services stay as they are, and a new code path that creates or deletes an audited
object is recorded without anyone remembering to. The actor is the API key of the request
being served (none in a worker: an adapter registered by a job carries the job id and the
id of the request that created the job).
"""

from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from app.aliases.models import Alias, AliasVersion
from app.audit.models import AuditEvent
from app.auth.models import ApiKey
from app.observability.context import current_record, request_id
from app.registry.models import Adapter
from app.templates.models import Template


def _actor() -> str | None:
    record = current_record.get()
    return record.actor_key_id if record is not None else None


def _event(
    action: str, object_type: str, object_id: str, tenant: str, **details: Any
) -> AuditEvent:
    return AuditEvent(
        tenant=tenant,
        actor_key_id=_actor(),
        action=action,
        object_type=object_type,
        object_id=object_id,
        request_id=request_id(),
        details={k: v for k, v in details.items() if v is not None} or None,
    )


def _changed(obj: object, attr: str) -> bool:
    return inspect(obj).attrs[attr].history.has_changes()


def _events(session: Session) -> list[AuditEvent]:
    out: list[AuditEvent] = []
    for obj in session.new:
        if isinstance(obj, ApiKey):
            out.append(
                _event(
                    "key.create",
                    "api_key",
                    obj.id,
                    obj.tenant,
                    name=obj.name,
                    scopes=obj.scopes,
                    platform=obj.platform or None,
                )
            )
        elif isinstance(obj, Template):
            out.append(_event("template.create", "template", obj.name, obj.tenant))
        elif isinstance(obj, Adapter):
            out.append(_event("adapter.create", "adapter", obj.name, obj.tenant, job_id=obj.job_id))
        elif isinstance(obj, Alias):
            out.append(_event("alias.create", "alias", obj.name, obj.tenant))
        elif isinstance(obj, AliasVersion) and (obj.version or 0) > 1:
            with session.no_autoflush:
                alias = session.get(Alias, obj.alias_id)
            if alias is not None:
                out.append(
                    _event(
                        "alias.repoint",
                        "alias",
                        alias.name,
                        alias.tenant,
                        version=obj.version,
                        targets=obj.targets,
                    )
                )
    for obj in session.dirty:
        if isinstance(obj, ApiKey):
            if _changed(obj, "revoked_at") and obj.revoked_at is not None:
                out.append(_event("key.revoke", "api_key", obj.id, obj.tenant))
            if _changed(obj, "key_hash"):
                out.append(
                    _event(
                        "key.rotate",
                        "api_key",
                        obj.id,
                        obj.tenant,
                        grace_until=str(obj.previous_valid_until or "") or None,
                    )
                )
    for obj in session.deleted:
        if isinstance(obj, Template):
            out.append(_event("template.delete", "template", obj.name, obj.tenant))
        elif isinstance(obj, Adapter):
            out.append(_event("adapter.delete", "adapter", obj.name, obj.tenant))
        elif isinstance(obj, Alias):
            out.append(_event("alias.delete", "alias", obj.name, obj.tenant))
        elif isinstance(obj, ApiKey):
            out.append(_event("key.delete", "api_key", obj.id, obj.tenant))
    return out


@event.listens_for(Session, "before_flush")
def _record(session: Session, _flush_context, _instances) -> None:
    for row in _events(session):
        session.add(row)
