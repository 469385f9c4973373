"""OpenAI file objects, with adaptd's extra fields (checksum, format, counts)."""

from typing import Any, Literal

from pydantic import BaseModel


class FileRead(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"
    status_details: str | None = None
    # adaptd extensions
    sha256: str
    format: str
    num_examples: int
    stats: dict[str, Any] = {}


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileRead]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True
