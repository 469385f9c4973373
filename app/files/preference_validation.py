"""OpenAI's preference JSONL (for DPO jobs), one pair a line:

    {"input": {"messages": [...]},
     "preferred_output": [{"role": "assistant", "content": "..."}],
     "non_preferred_output": [{"role": "assistant", "content": "..."}]}

Each line is normalised to {"messages": input messages, "preferred": text, "non_preferred":
text}; every problem gets its line number and a stable code, like SFT files.
"""

from typing import Any

from app.files.problems import (
    EMPTY_CONTENT,
    IDENTICAL_OUTPUTS,
    INPUT_NOT_ENDING_WITH_USER,
    INVALID_OUTPUT,
    MISSING_INPUT,
    Problem,
    Problems,
    checked_message,
    content_text,
)

OUTPUT_KEYS = ("preferred_output", "non_preferred_output")


def is_preference_line(obj: dict[str, Any]) -> bool:
    return any(key in obj for key in ("input", *OUTPUT_KEYS))


def _input_messages(line: int, obj: dict[str, Any], problems: Problems) -> list | None:
    source = obj.get("input")
    messages = source.get("messages") if isinstance(source, dict) else None
    if not isinstance(messages, list) or not messages:
        problems.append(
            Problem(line, MISSING_INPUT, "'input.messages' must be a non-empty list of messages")
        )
        return None
    out: list[dict[str, str]] = []
    ok = True
    for i, msg in enumerate(messages):
        item = checked_message(line, f"input.messages[{i}]", msg, problems)
        if item is None:
            ok = False
            continue
        out.append(item)
    if ok and out[-1]["role"] != "user":
        problems.append(
            Problem(
                line,
                INPUT_NOT_ENDING_WITH_USER,
                "the last input message must be the user's: the outputs answer it",
            )
        )
        return None
    return out if ok else None


def _output(line: int, obj: dict[str, Any], key: str, problems: Problems) -> str | None:
    value = obj.get(key)
    if (
        not isinstance(value, list)
        or len(value) != 1
        or not isinstance(value[0], dict)
        or value[0].get("role") != "assistant"
    ):
        problems.append(
            Problem(line, INVALID_OUTPUT, f"'{key}' must be a list of one assistant message")
        )
        return None
    text = content_text(value[0].get("content"))
    if text is None or not text.strip():
        problems.append(Problem(line, EMPTY_CONTENT, f"{key}[0].content is empty or missing"))
        return None
    return text


def preference_example(line: int, obj: dict[str, Any], problems: Problems) -> dict | None:
    messages = _input_messages(line, obj, problems)
    preferred = _output(line, obj, "preferred_output", problems)
    non_preferred = _output(line, obj, "non_preferred_output", problems)
    if messages is None or preferred is None or non_preferred is None:
        return None
    if preferred == non_preferred:
        problems.append(
            Problem(line, IDENTICAL_OUTPUTS, "the preferred and non-preferred outputs are equal")
        )
        return None
    return {"messages": messages, "preferred": preferred, "non_preferred": non_preferred}


def token_view(example: dict[str, Any]) -> list[dict[str, Any]]:
    """The longer of the two conversations (input + one output), for token counting."""
    longer = max(example["preferred"], example["non_preferred"], key=len)
    return [*example["messages"], {"role": "assistant", "content": longer}]
