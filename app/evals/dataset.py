"""Labeled examples for an evaluation, from a file stored by the files API."""

from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.errors import BadRequest
from app.files import service as files
from app.settings import get_settings


@dataclass(frozen=True)
class LabeledExample:
    messages: list[dict[str, str]]  # the conversation up to (not including) the answer
    expected: str

    @property
    def input(self) -> str:
        users = [m["content"] for m in self.messages if m["role"] == "user"]
        return users[-1] if users else ""


def load_labeled_examples(session: Session, tenant: str, file_id: str) -> list[LabeledExample]:
    row = files.get_file(session, tenant, file_id)
    examples = []
    for example in files.read_examples(row, get_settings().files_dir):
        messages = [{"role": m["role"], "content": m["content"]} for m in example["messages"]]
        # The last assistant turn is the expected answer; everything before it is the prompt.
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None:
            continue
        expected = messages[last]["content"]
        examples.append(LabeledExample(messages=messages[:last], expected=expected))
    if not examples:
        raise BadRequest("The file holds no labeled examples.", param="file_id")
    return examples
