"""Template versions and tags. (Filled in by the templates work; see issue 3.)"""

from dataclasses import dataclass

from sqlalchemy.orm import Session


@dataclass(frozen=True)
class ResolvedTemplate:
    name: str
    version: int
    model: str


def resolve_reference(session: Session, tenant: str, reference: str) -> ResolvedTemplate | None:
    return None
