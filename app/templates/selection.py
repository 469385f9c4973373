"""Example selection rules: which examples go into a prompt, most relevant first."""

from typing import Any

from app import embeddings


def example_text(example: dict[str, Any]) -> str:
    """What an example is compared by: its input."""
    return str(example.get("input", ""))


def compute_embeddings(examples: list[dict[str, Any]]) -> bytes:
    return embeddings.to_bytes(embeddings.embed([example_text(e) for e in examples]))


def select(
    examples: list[dict[str, Any]],
    rule: str,
    k: int | None,
    stored: bytes | None,
    query: str,
) -> list[int]:
    """Indices into `examples`, most relevant first; trimming drops from the end."""
    n = len(examples)
    if rule == "all" or n == 0:
        return list(range(n))
    limit = min(k if k is not None else n, n)
    if rule == "first_k":
        return list(range(limit))
    # similar_k: cosine similarity between the request's input and each stored example.
    matrix = (
        embeddings.from_bytes(stored, n)
        if stored
        else embeddings.embed([example_text(e) for e in examples])  # rows saved before
    )
    scores = matrix @ embeddings.embed([query])[0]
    # Stable: equal scores keep the examples' own order.
    order = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    return order[:limit]
