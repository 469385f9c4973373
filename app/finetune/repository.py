"""The fine-tuning jobs one tenant may read, and their events and checkpoints."""

from collections.abc import Callable

from sqlalchemy import or_, select

from app.finetune.models import FineTuningJob, JobCheckpoint, JobEvent
from app.registry.models import Adapter
from app.repository import TenantRepository, keyset_page
from app.status import ACTIVE


class JobRepository(TenantRepository[FineTuningJob]):
    model = FineTuningJob

    def active_count(self) -> int:
        return self.count(FineTuningJob.status.in_(ACTIVE))

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
