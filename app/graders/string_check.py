"""string_check: 1.0 or 0.0 from one comparison of the rendered input and reference."""

from typing import Literal

Operation = Literal["eq", "ne", "like", "ilike"]


def string_check(operation: Operation, text: str, reference: str) -> float:
    """eq / ne: equal or not (case-sensitive); like: `text` contains `reference`;
    ilike: contains it ignoring case (Unicode casefold)."""
    if operation == "eq":
        return float(text == reference)
    if operation == "ne":
        return float(text != reference)
    if operation == "like":
        return float(reference in text)
    return float(reference.casefold() in text.casefold())
