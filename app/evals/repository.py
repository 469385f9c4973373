"""The evaluations one tenant may read."""

from app.evals.models import Evaluation
from app.repository import TenantRepository


class EvaluationRepository(TenantRepository[Evaluation]):
    model = Evaluation
