"""Parse and validate an uploaded data set, before anything is stored.

Accepted: OpenAI chat JSONL ({"messages": [...]}, optional `weight` 0/1 on assistant turns),
prompt/completion JSONL, and CSV with input/output (or text/label) columns. Every example is
normalised to chat messages, the one form the trainer reads. Every problem is reported with
its 1-based line number (None for whole-file problems) and a stable code.
"""

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.protocol.values import surrogate_at

ROLES = {"system", "user", "assistant"}
ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system role
CSV_COLUMN_PAIRS = [("input", "output"), ("text", "label"), ("prompt", "completion")]
MAX_REPORTED_ERRORS = 100

MAX_JSON_DEPTH = 64  # objects and lists within one JSONL line

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


@dataclass(frozen=True)
class Problem:
    line: int | None
    code: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "code": self.code, "message": self.message}


@dataclass
class ParsedDataset:
    format: str  # chat | prompt_completion | csv | preference
    examples: list[dict[str, Any]] = field(default_factory=list)  # {"messages": [...]}
    problems: list[Problem] = field(default_factory=list)
    total_tokens: int = 0
    max_tokens: int = 0


# Counts the tokens of one normalised example as the trainer will see it.
TokenCounter = Callable[[list[dict[str, Any]]], int]


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


def checked_message(
    line: int, where: str, msg: Any, problems: list[Problem]
) -> dict[str, Any] | None:
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


def _chat_example(line: int, obj: dict[str, Any], problems: list[Problem]) -> dict | None:
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        problems.append(
            Problem(line, MISSING_MESSAGES, "'messages' must be a non-empty list of messages")
        )
        return None
    out: list[dict[str, Any]] = []
    ok = True
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        item = checked_message(line, where, msg, problems)
        if item is None:
            ok = False
            continue
        role = item["role"]
        if "weight" in msg:
            if (
                role != "assistant"
                or msg["weight"] not in (0, 1)
                or isinstance(msg["weight"], bool)
            ):
                problems.append(
                    Problem(line, INVALID_WEIGHT, f"{where}.weight must be 0 or 1, on assistant")
                )
                ok = False
                continue
            item["weight"] = int(msg["weight"])
        out.append(item)
    if not ok:
        return None
    if not any(m["role"] == "assistant" and m.get("weight", 1) == 1 for m in out):
        problems.append(
            Problem(line, NO_ASSISTANT_TURN, "no assistant message with weight 1 to learn from")
        )
        return None
    return {"messages": out}


def _pair_example(
    line: int, prompt: Any, completion: Any, names: tuple[str, str], problems: list[Problem]
) -> dict | None:
    bad = [
        n
        for n, v in zip(names, (prompt, completion), strict=True)
        if not isinstance(v, str) or not v.strip()
    ]
    if bad:
        problems.append(Problem(line, EMPTY_CONTENT, f"{' and '.join(bad)} empty or not text"))
        return None
    user = {"role": "user", "content": prompt}
    return {"messages": [user, {"role": "assistant", "content": completion}]}


def load_json_line(number: int, raw: str) -> tuple[Any, Problem | None]:
    """One JSONL line as a value, or the problem with it: invalid JSON, nesting deeper than
    MAX_JSON_DEPTH (50,000 levels made the parser itself overflow), or text that is not valid
    Unicode (a lone UTF-16 surrogate, which no tokenizer or database accepts)."""
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, Problem(number, INVALID_JSON, f"invalid JSON: {exc.msg}")
    except RecursionError:
        return None, Problem(number, INVALID_JSON, _too_deep())
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            at = surrogate_at(item)
            if at is not None:
                message = f"not valid Unicode (a lone UTF-16 surrogate, U+{ord(item[at]):04X})"
                return None, Problem(number, INVALID_ENCODING, message)
        elif isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                return None, Problem(number, INVALID_JSON, _too_deep())
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                stack.extend((value, depth + 1) for value in item.values())
            else:
                stack.extend((value, depth + 1) for value in item)
    return obj, None


def _too_deep() -> str:
    return f"invalid JSON: nested more than {MAX_JSON_DEPTH} levels deep"


def _parse_jsonl(text: str, result: ParsedDataset) -> None:
    # Imported here: the preference module builds on this one's helpers.
    from app.files.preference_validation import is_preference_line, preference_example

    kinds: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        obj, problem = load_json_line(number, raw)
        if problem is not None:
            result.problems.append(problem)
            continue
        if not isinstance(obj, dict):
            result.problems.append(Problem(number, INVALID_JSON, "each line must be an object"))
            continue
        if is_preference_line(obj):
            kinds.add("preference")
            example = preference_example(number, obj, result.problems)
        elif "messages" in obj:
            kinds.add("chat")
            example = _chat_example(number, obj, result.problems)
        elif "prompt" in obj or "completion" in obj:
            kinds.add("prompt_completion")
            example = _pair_example(
                number,
                obj.get("prompt"),
                obj.get("completion"),
                ("prompt", "completion"),
                result.problems,
            )
        else:
            result.problems.append(
                Problem(number, MISSING_MESSAGES, "expected 'messages' or 'prompt'/'completion'")
            )
            continue
        if example is not None:
            example["line"] = number
            result.examples.append(example)
    if "preference" in kinds and len(kinds) > 1:
        result.problems.append(
            Problem(
                None,
                MIXED_FORMATS,
                "preference pairs (input/preferred_output/non_preferred_output) and "
                "training examples (messages or prompt/completion) in one file",
            )
        )
    if kinds == {"preference"}:
        result.format = "preference"
    else:
        result.format = "prompt_completion" if kinds == {"prompt_completion"} else "chat"


def _parse_csv(text: str, result: ParsedDataset) -> None:
    result.format = "csv"
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        result.problems.append(Problem(1, BAD_CSV_HEADER, "missing header row"))
        return
    columns = [h.strip().lower() for h in header]
    pair = next((p for p in CSV_COLUMN_PAIRS if p[0] in columns and p[1] in columns), None)
    if pair is None:
        result.problems.append(
            Problem(
                1,
                BAD_CSV_HEADER,
                "the header needs input,output (or text,label) columns; got " + ",".join(columns),
            )
        )
        return
    first, second = columns.index(pair[0]), columns.index(pair[1])
    while True:
        number = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.problems.append(Problem(number, BAD_CSV_ROW, f"unreadable CSV row: {exc}"))
            break
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(columns):
            result.problems.append(
                Problem(number, BAD_CSV_ROW, f"expected {len(columns)} cells, got {len(row)}")
            )
            continue
        example = _pair_example(number, row[first], row[second], pair, result.problems)
        if example is not None:
            example["line"] = number
            result.examples.append(example)


def _decode(data: bytes, problems: list[Problem]) -> str | None:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(
                Problem(number, INVALID_ENCODING, f"not UTF-8 (byte {exc.start} of the line)")
            )
            if len(problems) >= MAX_REPORTED_ERRORS:
                break
    return None


def looks_like_csv(filename: str, text: str) -> bool:
    if filename.lower().endswith(".csv"):
        return True
    if filename.lower().endswith((".jsonl", ".json", ".ndjson")):
        return False
    first = next((line for line in text.splitlines() if line.strip()), "")
    return not first.lstrip().startswith("{")


def parse_dataset(
    data: bytes,
    filename: str,
    *,
    max_bytes: int,
    min_examples: int,
    context_window: int,
    count_tokens: TokenCounter | None = None,
) -> ParsedDataset:
    """Parse `data` into chat examples and list every problem found (empty list: valid)."""
    result = ParsedDataset(format="unknown")
    if len(data) > max_bytes:
        result.problems.append(
            Problem(None, FILE_TOO_LARGE, f"{len(data)} bytes; the limit is {max_bytes}")
        )
        return result
    text = _decode(data, result.problems)
    if text is None:
        return result
    if not text.strip():
        result.problems.append(Problem(None, EMPTY_FILE, "the file is empty"))
        return result
    if looks_like_csv(filename, text):
        _parse_csv(text, result)
    else:
        _parse_jsonl(text, result)
    from app.files.preference_validation import token_view

    if count_tokens is not None:
        for example in result.examples:
            n = count_tokens(
                token_view(example) if result.format == "preference" else example["messages"]
            )
            result.total_tokens += n
            result.max_tokens = max(result.max_tokens, n)
            if n > context_window:
                result.problems.append(
                    Problem(
                        example["line"],
                        TOO_LONG,
                        f"{n} tokens; the model's context window is {context_window}",
                    )
                )
    records = {e["line"] for e in result.examples} | {
        p.line for p in result.problems if p.line is not None
    }
    header_bad = any(p.code == BAD_CSV_HEADER for p in result.problems)
    if len(records) < min_examples and not header_bad:
        result.problems.append(
            Problem(None, TOO_FEW_EXAMPLES, f"{len(records)} examples; at least {min_examples}")
        )
    result.problems.sort(key=lambda p: (p.line is None, p.line or 0))
    return result
