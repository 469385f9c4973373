"""Uploaded data sets: validate, store once under DATA_DIR/files (named by id), list, delete.

On disk, per file: `<id>` holds the bytes exactly as uploaded (served by /content) and
`<id>.examples.jsonl` the examples normalised to chat messages (what the trainer reads).
Both are written to temporary names and renamed before the row is committed, so a row
always points at complete files.
"""

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, BinaryIO

from sqlalchemy.orm import Session

from app.db import unix_time
from app.errors import BadRequest, Conflict, NotFound
from app.files.models import File
from app.files.problems import MAX_REPORTED_ERRORS
from app.files.repository import FileRepository
from app.files.schemas import FileRead
from app.files.validation import ParsedDataset, TokenCounter, parse_dataset
from app.ids import new_id

PURPOSES = {"fine-tune": 10, "evals": 1}  # purpose -> fewest examples accepted
EXAMPLES_SUFFIX = ".examples.jsonl"


class InvalidFile(BadRequest):
    code = "invalid_file"


def safe_filename(name: str | None) -> str:
    """The client's name, for display only: last path part, no control characters."""
    base = PurePath((name or "upload").replace("\\", "/")).name
    cleaned = "".join(ch for ch in base if ch.isprintable()).strip()
    return (cleaned or "upload")[:255]


COPY_CHUNK = 1 << 20  # bytes copied at a time from the upload to its stored file


@contextlib.contextmanager
def _atomic_file(target: Path) -> Iterator[BinaryIO]:
    """A new file written under a temporary name, renamed to `target` once complete (and
    removed instead if the block raises)."""
    fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _copy_hashed(source: BinaryIO, out: BinaryIO) -> tuple[int, str]:
    """Copies `source` from its start in chunks; its size and SHA-256."""
    source.seek(0)
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(COPY_CHUNK):
        digest.update(chunk)
        out.write(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def _invalid(parsed: ParsedDataset) -> InvalidFile:
    first = "; ".join(f"line {p.line}: {p.code}" if p.line else p.code for p in parsed.problems[:5])
    return InvalidFile(
        f"The file has {parsed.problem_count} problem(s) and was not stored: {first}"
        + (" ..." if parsed.problem_count > 5 else ""),
        param="file",
        details=[p.as_dict() for p in parsed.problems[:MAX_REPORTED_ERRORS]],
    )


@dataclass(frozen=True)
class StoredUpload:
    parsed: ParsedDataset
    size: int
    sha256: str


def store_upload(
    upload: BinaryIO,
    name: str,
    file_id: str,
    *,
    files_dir: Path,
    min_examples: int,
    max_bytes: int,
    context_window: int,
    count_tokens: TokenCounter | None,
) -> StoredUpload:
    """Validates `upload` (a seekable binary file) as it is read, writing each normalised
    example straight to the examples file, then copies the bytes as uploaded: the memory
    this takes does not grow with the file. Both files exist under `file_id` only if the
    upload is valid (else InvalidFile, and nothing is left behind)."""
    try:
        with _atomic_file(files_dir / f"{file_id}{EXAMPLES_SUFFIX}") as examples:

            def write(example: dict[str, Any]) -> None:
                examples.write(json.dumps(example, ensure_ascii=False).encode() + b"\n")

            parsed = parse_dataset(
                upload,
                name,
                max_bytes=max_bytes,
                min_examples=min_examples,
                context_window=context_window,
                count_tokens=count_tokens,
                sink=write,
            )
            if parsed.problem_count:
                raise _invalid(parsed)
            with _atomic_file(files_dir / file_id) as stored:
                size, sha256 = _copy_hashed(upload, stored)
    except BaseException:
        _remove_files(files_dir, file_id)
        raise
    return StoredUpload(parsed, size, sha256)


def create_file(
    session: Session,
    tenant: str,
    *,
    upload: BinaryIO,
    filename: str | None,
    purpose: str,
    files_dir: Path,
    max_bytes: int,
    context_window: int,
    count_tokens: TokenCounter | None,
) -> File:
    if purpose not in PURPOSES:
        raise BadRequest(
            f"purpose must be one of {', '.join(sorted(PURPOSES))}; got {purpose!r}",
            param="purpose",
            code="invalid_purpose",
        )
    name = safe_filename(filename)
    file_id = new_id("file-")
    files_dir.mkdir(parents=True, exist_ok=True)
    stored = store_upload(
        upload,
        name,
        file_id,
        files_dir=files_dir,
        min_examples=PURPOSES[purpose],
        max_bytes=max_bytes,
        context_window=context_window,
        count_tokens=count_tokens,
    )
    parsed = stored.parsed
    row = File(
        id=file_id,
        tenant=tenant,
        filename=name,
        purpose=purpose,
        bytes=stored.size,
        sha256=stored.sha256,
        format=parsed.format,
        num_examples=parsed.num_examples,
        storage_path=file_id,
        stats={"total_tokens": parsed.total_tokens, "max_tokens": parsed.max_tokens},
    )
    session.add(row)
    try:
        session.commit()
    except BaseException:
        session.rollback()
        _remove_files(files_dir, file_id)
        raise
    return row


def get_file(session: Session, tenant: str, file_id: str, param: str = "file_id") -> File:
    row = FileRepository(session, tenant).get(file_id)
    if row is None:
        raise NotFound(f"No such file: '{file_id}'.", param=param, code="file_not_found")
    return row


def list_files(
    session: Session,
    tenant: str,
    *,
    purpose: str | None,
    limit: int,
    after: str | None,
    order: str,
) -> tuple[list[File], bool]:
    cursor = get_file(session, tenant, after, param="after") if after else None
    return FileRepository(session, tenant).list_page(
        *([File.purpose == purpose] if purpose else []),
        keys=(File.created_at, File.id),
        after=(cursor.created_at, cursor.id) if cursor is not None else None,
        limit=limit,
        descending=order != "asc",
    )


def _remove_files(files_dir: Path, file_id: str) -> None:
    for path in (files_dir / file_id, files_dir / f"{file_id}{EXAMPLES_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# file id -> what still needs the file (e.g. "fine-tuning job ftjob-..."); empty when nothing.
FileUsers = Callable[[str], list[str]]


def delete_file(
    session: Session, tenant: str, file_id: str, files_dir: Path, users_of: FileUsers
) -> None:
    row = get_file(session, tenant, file_id)
    users = users_of(file_id)
    if users:
        raise Conflict(
            f"File '{file_id}' is used by {', '.join(users)}, not finished yet; delete the "
            "file once they finish (a fine-tuning job can be cancelled first).",
            param="file_id",
            code="file_in_use",
        )
    session.delete(row)
    session.commit()
    _remove_files(files_dir, row.storage_path)


def open_content(session: Session, tenant: str, file_id: str, files_dir: Path) -> BinaryIO:
    """The stored bytes of a file, opened: once open they stay readable to the end even if
    the file is deleted meanwhile. A DELETE that lands between the lookup and the open is
    the same 404 as one that landed before the lookup."""
    row = get_file(session, tenant, file_id)
    try:
        return (files_dir / row.storage_path).open("rb")
    except FileNotFoundError:
        raise NotFound(
            f"No such file: '{file_id}'.", param="file_id", code="file_not_found"
        ) from None


def read_examples(row: File, files_dir: Path) -> list[dict[str, Any]]:
    """The normalised chat examples of a stored file, in upload order."""
    path = files_dir / f"{row.storage_path}{EXAMPLES_SUFFIX}"
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def to_read(row: File) -> FileRead:
    return FileRead(
        id=row.id,
        bytes=row.bytes,
        created_at=unix_time(row.created_at) or 0,
        filename=row.filename,
        purpose=row.purpose,
        sha256=row.sha256,
        format=row.format,
        num_examples=row.num_examples,
        stats=row.stats or {},
    )
