"""Run in a subprocess by test_upload_memory: stores one generated upload at the size limit
through files.service.create_file (SQLite in memory) and prints, as JSON, how far the
process's peak resident memory rose while it did.

    python -m tests.files.upload_peak invalid|valid <folder>
"""

import json
import resource
import sys
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from app.errors import APIError
from app.files import service
from app.files.models import File
from app.settings import Settings

CHAT_LINE = (
    json.dumps(
        {
            "messages": [
                {"role": "user", "content": "Classify the sentiment: a film of quiet wit. " * 180},
                {"role": "assistant", "content": "positive"},
            ]
        }
    ).encode()
    + b"\n"
)
# Not JSON: each line is a problem (4 KiB each: shorter lines only make the test slower).
INVALID_LINE = b"{not json" + b"x" * 4086 + b"\n"


def write_file(path: Path, line: bytes, size: int) -> None:
    """Copies of `line` up to `size` bytes, written a block at a time (never held whole)."""
    block = line * (1 << 20 // len(line))
    with path.open("wb") as fh:
        for _ in range(size // len(block)):
            fh.write(block)
        fh.write(line * ((size % len(block)) // len(line)))


def words(messages: list[dict]) -> int:
    """A stand-in for the tokenizer (its memory per example does not grow with the file)."""
    return sum(len(m["content"].split()) for m in messages)


def peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    case, folder = sys.argv[1], Path(sys.argv[2])
    limit = Settings().max_upload_bytes
    upload = folder / "upload.jsonl"
    write_file(upload, CHAT_LINE if case == "valid" else INVALID_LINE, limit)
    engine = create_engine("sqlite://")
    File.__table__.create(engine)
    before = peak_kib()
    with Session(engine) as session, upload.open("rb") as fh:
        try:
            row = service.create_file(
                session,
                "tenant",
                upload=fh,
                filename="upload.jsonl",
                purpose="fine-tune",
                files_dir=folder / "files",
                max_bytes=limit,
                context_window=1 << 20,
                count_tokens=words,
            )
            outcome = {"examples": row.num_examples, "bytes": row.bytes}
        except APIError as exc:
            outcome = {"error": exc.message[:200], "details": len(exc.details or [])}
    print(json.dumps({"bytes": upload.stat().st_size, "rise_kib": peak_kib() - before, **outcome}))


if __name__ == "__main__":
    main()
