"""/v1/files: OpenAI-compatible upload, list, retrieve, content, delete."""

import os
from collections.abc import Iterator
from typing import Annotated, BinaryIO, Literal

from fastapi import APIRouter, Depends, Form, Query, Request, UploadFile
from fastapi import File as FileField
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from app.auth.dependencies import TenantDep
from app.db import SessionDep
from app.evals import service as evals
from app.files import service
from app.files.schemas import FileDeleted, FileList, FileRead
from app.files.tokens import token_counter, tokenizer_and_window
from app.finetune import service as finetune
from app.protocol.forms import single_form_fields
from app.settings import get_settings

router = APIRouter(prefix="/v1/files", tags=["files"])
CONTENT_CHUNK = 1 << 16  # bytes sent at a time from a stored file


@router.post("", response_model=FileRead, dependencies=[Depends(single_form_fields)])
def upload_file(
    request: Request,
    principal: TenantDep,
    session: SessionDep,
    file: Annotated[UploadFile, FileField(description="JSONL or CSV data set")],
    purpose: Annotated[str, Form(description="fine-tune or evals")],
) -> FileRead:
    settings = get_settings()
    tokenizer, window = tokenizer_and_window(request)
    row = service.create_file(
        session,
        principal.tenant,
        upload=file.file,  # spooled to disk by the form parser; read from there in pieces
        filename=file.filename,
        purpose=purpose,
        files_dir=settings.files_dir,
        max_bytes=settings.max_upload_bytes,
        context_window=window,
        count_tokens=token_counter(tokenizer),
    )
    return service.to_read(row)


@router.get("", response_model=FileList)
def list_files(
    principal: TenantDep,
    session: SessionDep,
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
    after: str | None = None,
    order: Literal["asc", "desc"] = "desc",
) -> FileList:
    rows, has_more = service.list_files(
        session, principal.tenant, purpose=purpose, limit=limit, after=after, order=order
    )
    data = [service.to_read(r) for r in rows]
    return FileList(
        data=data,
        has_more=has_more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


@router.get("/{file_id}", response_model=FileRead)
def retrieve_file(file_id: str, principal: TenantDep, session: SessionDep) -> FileRead:
    return service.to_read(service.get_file(session, principal.tenant, file_id))


@router.get(
    "/{file_id}/content",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def file_content(file_id: str, principal: TenantDep, session: SessionDep) -> StreamingResponse:
    # Opened here, read while streaming: a DELETE racing this answers 404 or lets the
    # whole content through (an open file stays readable), never a half-read error.
    fh = service.open_content(session, principal.tenant, file_id, get_settings().files_dir)
    return StreamingResponse(
        _chunks(fh),
        media_type="application/octet-stream",
        headers={"content-length": str(os.fstat(fh.fileno()).st_size)},
    )


def _chunks(fh: BinaryIO) -> Iterator[bytes]:
    with fh:
        while chunk := fh.read(CONTENT_CHUNK):
            yield chunk


@router.delete("/{file_id}", response_model=FileDeleted)
def delete_file(file_id: str, principal: TenantDep, session: SessionDep) -> FileDeleted:
    service.delete_file(
        session,
        principal.tenant,
        file_id,
        get_settings().files_dir,
        lambda fid: file_users(session, principal.tenant, fid),
    )
    return FileDeleted(id=file_id)


def file_users(session: Session, tenant: str, file_id: str) -> list[str]:
    """What has not finished with the file yet (its deletion is refused meanwhile)."""
    return [f"fine-tuning job {j}" for j in finetune.using_file(session, tenant, file_id)] + [
        f"evaluation {e}" for e in evals.using_file(session, tenant, file_id)
    ]
