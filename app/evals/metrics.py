"""How an answer is scored against the expected one."""

import re
import string
import unicodedata
from collections.abc import Callable

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalise_label(text: str) -> str:
    """First non-empty line, case-folded, punctuation dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text)
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    return " ".join(_PUNCT.sub(" ", line.casefold()).split())


def exact(answer: str, expected: str) -> bool:
    return answer.strip() == expected.strip()


def label(answer: str, expected: str) -> bool:
    return normalise_label(answer) == normalise_label(expected)


def contains(answer: str, expected: str) -> bool:
    return normalise_label(expected) in normalise_label(answer)


METRICS: dict[str, Callable[[str, str], bool]] = {
    "exact": exact,
    "label": label,
    "contains": contains,
}
