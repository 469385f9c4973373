"""Parse and validate an uploaded data set, before anything is stored.

Accepted: OpenAI chat JSONL ({"messages": [...]}, optional `weight` 0/1 on assistant turns),
prompt/completion JSONL, and CSV with input/output (or text/label) columns. Every example is
normalised to chat messages, the one form the trainer reads. Every problem is reported with
its 1-based line number (None for whole-file problems) and a stable code.

The file is read line by line (lines end at `\n` only: a JSON string may hold U+2028 or
U+0085 as they are), each example is handed on as soon as it is checked, and only the first
MAX_REPORTED_ERRORS problems are kept (the rest are counted): the memory one upload needs
does not grow with its number of lines or problems.
"""

import codecs
import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from app.files.preference_validation import is_preference_line, preference_example, token_view
from app.files.problems import (
    BAD_CSV_HEADER,
    BAD_CSV_ROW,
    EMPTY_CONTENT,
    EMPTY_FILE,
    FILE_TOO_LARGE,
    INVALID_ENCODING,
    INVALID_JSON,
    INVALID_WEIGHT,
    MISSING_MESSAGES,
    MIXED_FORMATS,
    NO_ASSISTANT_TURN,
    TOO_FEW_EXAMPLES,
    TOO_LONG,
    Problem,
    Problems,
    checked_message,
)
from app.protocol.values import text_problem

CSV_COLUMN_PAIRS = [("input", "output"), ("text", "label"), ("prompt", "completion")]
READ_CHUNK = 1 << 20  # bytes read at a time by the UTF-8 check

MAX_JSON_DEPTH = 64  # objects and lists within one JSONL line
# Values (objects, lists, and what commas separate) in one JSONL line; an example with more
# is far past any context window, and each parsed value costs tens of bytes.
MAX_JSON_ITEMS = 100_000


@dataclass
class ParsedDataset:
    format: str  # chat | prompt_completion | csv | preference
    # {"messages": [...]}, only when parse_dataset was given no sink to hand them to.
    examples: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # the first MAX_REPORTED_ERRORS
    problem_count: int = 0  # all of them
    num_examples: int = 0
    total_tokens: int = 0
    max_tokens: int = 0


# Counts the tokens of one normalised example as the trainer will see it.
TokenCounter = Callable[[list[dict[str, Any]]], int]
# Takes each valid example, as it is checked (e.g. writes it to the examples file).
ExampleSink = Callable[[dict[str, Any]], None]


def _chat_example(line: int, obj: dict[str, Any], problems: Problems) -> dict | None:
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
    line: int, prompt: Any, completion: Any, names: tuple[str, str], problems: Problems
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
    """One JSONL line as a value, or the problem with it: invalid JSON, more than
    MAX_JSON_ITEMS values (parsed, a line of 64 MiB of `{},` took gigabytes), nesting deeper
    than MAX_JSON_DEPTH (50,000 levels made the parser itself overflow), or text that is not
    valid Unicode (a lone UTF-16 surrogate, which no tokenizer or database accepts)."""
    if _items_over(raw, MAX_JSON_ITEMS):
        return None, Problem(number, INVALID_JSON, _too_many())
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, Problem(number, INVALID_JSON, f"invalid JSON: {exc.msg}")
    except RecursionError:
        return None, Problem(number, INVALID_JSON, _too_deep())
    # Only objects and lists are stacked (a tuple per value would cost more than the value).
    stack: list[tuple[Any, int]] = [(obj, 1)] if isinstance(obj, dict | list) else []
    problem = _unstorable(number, obj) if isinstance(obj, str) else None
    while stack and problem is None:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return None, Problem(number, INVALID_JSON, _too_deep())
        for value in (*item, *item.values()) if isinstance(item, dict) else item:
            if isinstance(value, str):
                problem = _unstorable(number, value)
                if problem is not None:
                    break
            elif isinstance(value, dict | list):
                stack.append((value, depth + 1))
    return (None, problem) if problem is not None else (obj, None)


def _unstorable(number: int, text: str) -> Problem | None:
    """A lone surrogate or a NUL: text that PostgreSQL (and so the evaluation and job rows
    made from the file) cannot store, refused here as in request bodies."""
    problem = text_problem(text)
    if problem is None:
        return None
    return Problem(number, INVALID_ENCODING, f"not storable text ({problem})")


def _items_over(raw: str, limit: int) -> bool:
    """Whether the JSON text has more than `limit` of `{`, `[` and `,` outside its strings
    (every value but the first of a list or object follows a comma). Linear: the common case
    is one count of the whole line; otherwise it hops from quote to quote."""
    if raw.count("{") + raw.count("[") + raw.count(",") <= limit:
        return False
    seen, start, end = 0, 0, len(raw)
    while start < end:
        quote = raw.find('"', start)
        stop = end if quote < 0 else quote
        seen += sum(raw.count(c, start, stop) for c in "{[,")
        if seen > limit:
            return True
        if quote < 0:
            return False
        close = quote
        while True:  # the string's closing quote: one not escaped by an odd run of `\`
            close = raw.find('"', close + 1)
            if close < 0:
                return False  # unterminated: the parser says so
            slashes = close - 1
            while raw[slashes] == "\\":
                slashes -= 1
            if (close - 1 - slashes) % 2 == 0:
                break
        start = close + 1
    return False


def _too_many() -> str:
    return f"invalid JSON: more than {MAX_JSON_ITEMS} values in one line"


def _too_deep() -> str:
    return f"invalid JSON: nested more than {MAX_JSON_DEPTH} levels deep"


class _Run:
    """One validation: where problems are counted and valid examples go, record by record."""

    def __init__(
        self,
        result: ParsedDataset,
        *,
        context_window: int,
        count_tokens: TokenCounter | None,
        sink: ExampleSink | None,
    ) -> None:
        self.result = result
        self.problems = Problems()
        self.context_window = context_window
        self.count_tokens = count_tokens
        self.sink = sink
        self.records = 0  # lines (CSV rows) that made an example or a problem

    def done(self, number: int, example: dict[str, Any] | None, problems_before: int) -> None:
        """One record checked: counted, and its example (if it made one) measured, passed on."""
        if example is None:
            self.records += int(self.problems.count > problems_before)
            return
        self.records += 1
        if self.count_tokens is not None:
            n = self.count_tokens(
                token_view(example) if "preferred" in example else example["messages"]
            )
            self.result.total_tokens += n
            self.result.max_tokens = max(self.result.max_tokens, n)
            if n > self.context_window:
                self.problems.append(
                    Problem(
                        number,
                        TOO_LONG,
                        f"{n} tokens; the model's context window is {self.context_window}",
                    )
                )
        self.result.num_examples += 1
        if self.sink is not None:
            self.sink(example)
        else:
            self.result.examples.append(example)


def _jsonl_example(number: int, raw: str, problems: Problems, kinds: set[str]) -> dict | None:
    obj, problem = load_json_line(number, raw)
    if problem is not None:
        problems.append(problem)
        return None
    if not isinstance(obj, dict):
        problems.append(Problem(number, INVALID_JSON, "each line must be an object"))
        return None
    if is_preference_line(obj):
        kinds.add("preference")
        return preference_example(number, obj, problems)
    if "messages" in obj:
        kinds.add("chat")
        return _chat_example(number, obj, problems)
    if "prompt" in obj or "completion" in obj:
        kinds.add("prompt_completion")
        names = ("prompt", "completion")
        return _pair_example(number, obj.get("prompt"), obj.get("completion"), names, problems)
    problems.append(
        Problem(number, MISSING_MESSAGES, "expected 'messages' or 'prompt'/'completion'")
    )
    return None


def _parse_jsonl(lines: Iterator[str], run: _Run) -> None:
    problems = run.problems
    kinds: set[str] = set()
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        before = problems.count
        run.done(number, _jsonl_example(number, raw, problems, kinds), before)
    if "preference" in kinds and len(kinds) > 1:
        problems.append(
            Problem(
                None,
                MIXED_FORMATS,
                "preference pairs (input/preferred_output/non_preferred_output) and "
                "training examples (messages or prompt/completion) in one file",
            )
        )
    if kinds == {"preference"}:
        run.result.format = "preference"
    else:
        run.result.format = "prompt_completion" if kinds == {"prompt_completion"} else "chat"


def _parse_csv(lines: Iterator[str], run: _Run) -> None:
    problems = run.problems
    run.result.format = "csv"
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        problems.append(Problem(1, BAD_CSV_HEADER, "missing header row"))
        return
    columns = [h.strip().lower() for h in header]
    pair = next((p for p in CSV_COLUMN_PAIRS if p[0] in columns and p[1] in columns), None)
    if pair is None:
        problems.append(
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
        before = problems.count
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(Problem(number, BAD_CSV_ROW, f"unreadable CSV row: {exc}"))
            run.done(number, None, before)
            break
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(columns):
            problems.append(
                Problem(number, BAD_CSV_ROW, f"expected {len(columns)} cells, got {len(row)}")
            )
            run.done(number, None, before)
            continue
        example = _pair_example(number, row[first], row[second], pair, problems)
        run.done(number, example, before)


def _check_utf8(source: BinaryIO, problems: Problems) -> bool:
    """Whether the whole file is UTF-8; if not, a problem for each line that is not. Read in
    chunks: one pass, no copy of the file, whatever its lines."""
    source.seek(0)
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        while chunk := source.read(READ_CHUNK):
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
        return True
    except UnicodeDecodeError:
        pass
    source.seek(0)
    for number, raw in enumerate(source, start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(
                Problem(number, INVALID_ENCODING, f"not UTF-8 (byte {exc.start} of the line)")
            )
    return False


def _text_lines(source: BinaryIO) -> Iterator[str]:
    """The lines of a file already checked as UTF-8, read one at a time from its start; a
    line ends at `\\n` only (not at the other separators str.splitlines knows, which JSON
    strings may hold as they are); a byte order mark at the start is dropped."""
    source.seek(0)
    for number, raw in enumerate(source):
        line = raw.decode("utf-8")
        yield line.removeprefix("\ufeff") if number == 0 else line


def looks_like_csv(filename: str, first_line: str) -> bool:
    """CSV by its name, else by its first non-blank line (JSONL's starts with `{`)."""
    if filename.lower().endswith(".csv"):
        return True
    if filename.lower().endswith((".jsonl", ".json", ".ndjson")):
        return False
    return not first_line.lstrip().startswith("{")


def _size(source: BinaryIO) -> int:
    source.seek(0, io.SEEK_END)
    return source.tell()


def parse_dataset(
    data: bytes | BinaryIO,
    filename: str,
    *,
    max_bytes: int,
    min_examples: int,
    context_window: int,
    count_tokens: TokenCounter | None = None,
    sink: ExampleSink | None = None,
) -> ParsedDataset:
    """Parse `data` (bytes, or a seekable binary file read from its start) into chat
    examples, handed to `sink` as they are checked (else kept in `.examples`), and report
    its problems (`problem_count` 0: valid)."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    result = ParsedDataset(format="unknown")
    run = _Run(result, context_window=context_window, count_tokens=count_tokens, sink=sink)
    size = _size(source)
    if size > max_bytes:
        run.problems.append(
            Problem(None, FILE_TOO_LARGE, f"{size} bytes; the limit is {max_bytes}")
        )
    elif _check_utf8(source, run.problems):
        _parse(source, filename, run, min_examples)
    result.problems = run.problems.kept
    result.problem_count = run.problems.count
    return result


def _parse(source: BinaryIO, filename: str, run: _Run, min_examples: int) -> None:
    first = next((line for line in _text_lines(source) if line.strip()), None)
    if first is None:
        run.problems.append(Problem(None, EMPTY_FILE, "the file is empty"))
        return
    if looks_like_csv(filename, first):
        _parse_csv(_text_lines(source), run)
    else:
        _parse_jsonl(_text_lines(source), run)
    header_bad = any(p.code == BAD_CSV_HEADER for p in run.problems.kept)
    if run.records < min_examples and not header_bad:
        run.problems.append(
            Problem(None, TOO_FEW_EXAMPLES, f"{run.records} examples; at least {min_examples}")
        )
