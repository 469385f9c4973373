"""Every table, imported in one place so Alembic, tests, the API and the worker see the whole
schema; and the one place the audit recorder's session hook is installed (app/audit/recorder.py),
so every process that maps the tables records their audited changes."""

from app.aliases.models import Alias, AliasCounter, AliasVersion
from app.audit import recorder as _audit_recorder  # noqa: F401 - audits every session's flushes
from app.audit.models import AuditEvent
from app.auth.models import ApiKey
from app.console.models import ConsoleSignIn
from app.db import Base
from app.evals.models import EvalEvent, Evaluation
from app.files.models import File
from app.finetune.models import FineTuningJob, JobCheckpoint, JobEvent
from app.registry.models import Adapter
from app.templates.models import Template, TemplateTag, TemplateVersion

__all__ = [
    "Adapter",
    "Alias",
    "AliasCounter",
    "AliasVersion",
    "ApiKey",
    "AuditEvent",
    "ConsoleSignIn",
    "Base",
    "EvalEvent",
    "Evaluation",
    "File",
    "FineTuningJob",
    "JobCheckpoint",
    "JobEvent",
    "Template",
    "TemplateTag",
    "TemplateVersion",
]
