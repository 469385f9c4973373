"""Who points at a model: the aliases that target it, the templates that run on it, and the
unfinished evaluations and fine-tuning jobs that name it.

Asked before a template, a tag, an alias or an adapter is deleted (the domains' delete paths take
`references_in(session, tenant)` as an argument).
"""

from sqlalchemy.orm import Session

from app.aliases import service as aliases
from app.evals import service as evals
from app.finetune import service as finetune
from app.model_refs import TEMPLATE_PREFIX, References, ReferencesTo
from app.templates import service as templates


def references_to(session: Session, tenant: str, model: str) -> References:
    if model.startswith(TEMPLATE_PREFIX):
        # `tmpl:<name>` stands for every version and tag of the template.
        def matches(target: str) -> bool:
            return target == model or target.startswith(model + "@")
    else:

        def matches(target: str) -> bool:
            return target == model

    return References(
        aliases=aliases.pointing_to(session, tenant, matches),
        templates=templates.running_on(session, tenant, model),
        pending=[f"evaluation {e}" for e in evals.using_model(session, tenant, matches)]
        + [f"fine-tuning job {j}" for j in finetune.using_model(session, tenant, matches)],
    )


def references_in(session: Session, tenant: str) -> ReferencesTo:
    return lambda model: references_to(session, tenant, model)
