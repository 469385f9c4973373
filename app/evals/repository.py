"""The evaluations one tenant may read."""

from collections.abc import Callable

from app.evals.models import Evaluation
from app.repository import TenantRepository
from app.status import ACTIVE


class EvaluationRepository(TenantRepository[Evaluation]):
    model = Evaluation

    def using_model(self, matches: Callable[[str], bool]) -> list[str]:
        """Ids of the unfinished evaluations with a variant `matches` accepts."""
        active = self.all(Evaluation.status.in_(ACTIVE), order_by=(Evaluation.id,))
        return [e.id for e in active if any(matches(v) for v in e.variants)]

    def using_file(self, file_id: str) -> list[str]:
        """Ids of the unfinished evaluations that read the file."""
        active = self.all(Evaluation.status.in_(ACTIVE), Evaluation.file_id == file_id)
        return [e.id for e in active]
