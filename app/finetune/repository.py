"""The fine-tuning jobs one tenant may read, and their events and checkpoints."""

from collections.abc import Callable

from sqlalchemy import or_, select, text

from app.finetune.models import FineTuningJob, JobCheckpoint, JobEvent
from app.registry.models import Adapter
from app.repository import TenantRepository, keyset_page
from app.status import ACTIVE

# The first key of the advisory locks on job creation (the second is the tenant's hash): any
# constant, kept apart from other uses of advisory locks.
JOB_CREATION_LOCK_SPACE = 0x6A6F6273  # "jobs"


class JobRepository(TenantRepository[FineTuningJob]):
    model = FineTuningJob

    def active_count(self) -> int:
        return self.count(FineTuningJob.status.in_(ACTIVE))

    def lock_creations(self) -> None:
        """Serialise this tenant's job creations until the transaction ends, so a count of
        active jobs and the insert that follows it are one step (the quota holds under
        concurrent creations). PostgreSQL: a transaction-level advisory lock on the tenant
        (other tenants go on). SQLite: the database's write lock, taken now rather than at
        the first write (SQLite has one writer at a time anyway). Call it before any write
        of the transaction."""
        connection = self.session.connection()
        dialect = connection.dialect.name
        if dialect == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:space, hashtext(:tenant))"),
                {"space": JOB_CREATION_LOCK_SPACE, "tenant": self.tenant},
            )
        # pysqlite opens a transaction at the first write only; one already open has
        # written, so it holds the write lock already.
        elif dialect == "sqlite" and not connection.connection.dbapi_connection.in_transaction:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    def on_model(self, matches: Callable[[str], bool]) -> list[str]:
        """Ids of the unfinished jobs that train on top of a model `matches` accepts."""
        active = self.all(FineTuningJob.status.in_(ACTIVE), order_by=(FineTuningJob.id,))
        return [j.id for j in active if matches(j.model)]

    def using_file(self, file_id: str) -> list[str]:
        """Ids of the unfinished jobs that train on the file."""
        uses = or_(FineTuningJob.training_file == file_id, FineTuningJob.validation_file == file_id)
        return [j.id for j in self.all(FineTuningJob.status.in_(ACTIVE), uses)]

    def events_page(
        self, job: FineTuningJob, after_id: int | None, limit: int
    ) -> tuple[list[JobEvent], bool]:
        """Newest first."""
        return keyset_page(
            self.session,
            select(JobEvent).where(JobEvent.job_id == job.id),
            (JobEvent.id,),
            (after_id,) if after_id is not None else None,
            limit,
        )

    def checkpoints_page(
        self, job: FineTuningJob, after: str | None, limit: int
    ) -> tuple[list[JobCheckpoint], bool]:
        """Latest step first; a cursor that is not one of the job's checkpoints is ignored."""
        cursor = None
        if after:
            cursor = self.session.scalar(
                select(JobCheckpoint).where(
                    JobCheckpoint.id == after, JobCheckpoint.job_id == job.id
                )
            )
        # Only checkpoints still registered: one deleted through DELETE /v1/models is gone.
        registered = select(JobCheckpoint).join(
            Adapter, Adapter.name == JobCheckpoint.fine_tuned_model_checkpoint
        )
        return keyset_page(
            self.session,
            registered.where(JobCheckpoint.job_id == job.id),
            (JobCheckpoint.step,),
            (cursor.step,) if cursor is not None else None,
            limit,
        )
