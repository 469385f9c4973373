"""Aliases: stable names over variants. (Filled in by the aliases work; see issue 6.)"""

from sqlalchemy.orm import Session


def pick_target(session: Session, tenant: str, name: str) -> str | None:
    return None
