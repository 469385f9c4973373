"""Files: upload (a file with problems shows its report), list, delete."""

import io
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from app.console.session import ConsoleSession
from app.console.web import ConsoleDep, ConsoleRoute, FormConsoleDep, redirect, render
from app.db import SessionDep
from app.errors import APIError
from app.files import service as files
from app.files.router import file_users
from app.files.tokens import token_counter, tokenizer_and_window
from app.settings import get_settings

router = APIRouter(route_class=ConsoleRoute)
PURPOSES = ("fine-tune", "evals")


def _page(
    request: Request,
    console: ConsoleSession,
    session: Session,
    *,
    error: APIError | None = None,
    purpose: str = "fine-tune",
    uploaded: str | None = None,
    status_code: int = 200,
) -> Response:
    rows, _ = files.list_files(
        session, console.principal.tenant, purpose=None, limit=200, after=None, order="desc"
    )
    return render(
        request,
        "files.html",
        {
            "files": [files.to_read(r) for r in rows],
            "error": error,
            "problems": (error.details or []) if error is not None else [],
            "purposes": PURPOSES,
            "purpose": purpose,
            "uploaded": uploaded,
            "max_upload_mib": get_settings().max_upload_bytes / 2**20,
        },
        console=console,
        status_code=status_code,
    )


@router.get("/files", response_class=HTMLResponse)
def list_files(
    request: Request, console: ConsoleDep, session: SessionDep, uploaded: str | None = None
) -> Response:
    return _page(request, console, session, uploaded=uploaded)


@router.post("/files")
async def upload(
    request: Request,
    console: FormConsoleDep,
    session: SessionDep,
    file: Annotated[UploadFile | None, File()] = None,
    purpose: Annotated[str, Form()] = "fine-tune",
) -> Response:
    settings = get_settings()
    tokenizer, window = tokenizer_and_window(request)
    # The form parser spooled the file to disk; it is validated from there in pieces.
    upload = file.file if file is not None else io.BytesIO()

    def store() -> str:
        row = files.create_file(
            session,
            console.principal.tenant,
            upload=upload,
            filename=file.filename if file is not None else None,
            purpose=purpose,
            files_dir=settings.files_dir,
            max_bytes=settings.max_upload_bytes,
            context_window=window,
            count_tokens=token_counter(tokenizer),
        )
        return row.id

    try:
        file_id = await run_in_threadpool(store)
    except APIError as exc:
        return _page(
            request, console, session, error=exc, purpose=purpose, status_code=exc.status_code
        )
    return redirect(f"/files?uploaded={file_id}")


@router.post("/files/{file_id}/delete")
def delete(file_id: str, console: FormConsoleDep, session: SessionDep) -> Response:
    tenant = console.principal.tenant
    files.delete_file(
        session,
        tenant,
        file_id,
        get_settings().files_dir,
        lambda fid: file_users(session, tenant, fid),
    )
    return redirect("/files")
