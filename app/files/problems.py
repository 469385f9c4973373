"""What validating an uploaded data set reports: the problem codes (documented in README
"Fine-tuning"), the bounded list problems are collected in, and the check of one chat message
that chat files and the inputs of preference files share. Its own module so that both file
formats build on it without importing each other."""

from dataclasses import dataclass
from typing import Any

ROLES = {"system", "user", "assistant"}
ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system role
MAX_REPORTED_ERRORS = 100

# Codes, documented in README "Fine-tuning".
INVALID_ENCODING = "invalid_encoding"
FILE_TOO_LARGE = "file_too_large"
EMPTY_FILE = "empty_file"
INVALID_JSON = "invalid_json"
MISSING_MESSAGES = "missing_messages"
INVALID_MESSAGE = "invalid_message"
UNKNOWN_ROLE = "unknown_role"
EMPTY_CONTENT = "empty_content"
INVALID_WEIGHT = "invalid_weight"
NO_ASSISTANT_TURN = "no_assistant_turn"
TOO_LONG = "too_long"
TOO_FEW_EXAMPLES = "too_few_examples"
BAD_CSV_HEADER = "bad_csv_header"
BAD_CSV_ROW = "bad_csv_row"
MIXED_FORMATS = "mixed_formats"
# Preference files (DPO jobs).
MISSING_INPUT = "missing_input"
INPUT_NOT_ENDING_WITH_USER = "input_not_ending_with_user"
INVALID_OUTPUT = "invalid_output"
IDENTICAL_OUTPUTS = "identical_outputs"


@dataclass(frozen=True)
class Problem:
    line: int | None
    code: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "code": self.code, "message": self.message}


class Problems:
    """Every problem counted, the first `keep` kept: a file of a million bad lines costs a
    counter, not a million objects. Problems arrive in line order (whole-file ones last),
    so the kept ones are the first in the report."""

    def __init__(self, keep: int = MAX_REPORTED_ERRORS) -> None:
        self.keep = keep
        self.kept: list[Problem] = []
        self.count = 0

    def append(self, problem: Problem) -> None:
        self.count += 1
        if len(self.kept) < self.keep:
            self.kept.append(problem)


def content_text(content: Any) -> str | None:
    """A message's text: a string, or OpenAI's list of {"type": "text", "text": ...} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    ):
        return "".join(p["text"] for p in content)
    return None


def checked_message(line: int, where: str, msg: Any, problems: Problems) -> dict[str, Any] | None:
    """One chat message as {"role", "content"} (the role's alias resolved, the text of its
    parts joined), or None with its problem recorded: not an object, an unknown role, or
    empty content. Shared by chat files and the inputs of preference files."""
    if not isinstance(msg, dict):
        problems.append(Problem(line, INVALID_MESSAGE, f"{where} must be an object"))
        return None
    role = ROLE_ALIASES.get(msg.get("role"), msg.get("role"))
    if role not in ROLES:
        problems.append(
            Problem(
                line,
                UNKNOWN_ROLE,
                f"{where}.role {msg.get('role')!r} is not one of system, user, assistant",
            )
        )
        return None
    text = content_text(msg.get("content"))
    if text is None or not text.strip():
        problems.append(Problem(line, EMPTY_CONTENT, f"{where}.content is empty or missing"))
        return None
    return {"role": role, "content": text}
