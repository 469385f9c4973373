"""Labeled examples for an evaluation, read from a stored file of the files API."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import BadRequest, NotFound
from app.evals.runner import LabeledExample
from app.files.models import File
from app.settings import get_settings


def load_labeled_examples(session: Session, tenant: str, file_id: str) -> list[LabeledExample]:
    row = session.scalar(select(File).where(File.id == file_id, File.tenant == tenant))
    if row is None:
        raise NotFound(f"No file with id '{file_id}'.", param="file_id", code="file_not_found")
    from app.files.parsing import parse_examples

    raw = (get_settings().files_dir / row.storage_path).read_bytes()
    examples = []
    for conversation in parse_examples(raw, row.filename):
        messages = list(conversation)
        # The last assistant turn is the expected answer; everything before it is the prompt.
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None:
            continue
        examples.append(
            LabeledExample(messages=messages[:last], expected=messages[last]["content"])
        )
    if not examples:
        raise BadRequest("The file holds no labeled examples.", param="file_id")
    return examples
