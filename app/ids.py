"""Public identifiers: a readable prefix and a random suffix, like OpenAI's."""

import secrets


def new_id(prefix: str, nbytes: int = 12) -> str:
    return f"{prefix}{secrets.token_hex(nbytes)}"
