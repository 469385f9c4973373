"""Registered adapters: lookup for serving, listing, deletion.

Adapters are registered by app.finetune.lifecycle.succeed, in the same transaction that
marks the job succeeded, after the files are complete on disk.
"""

import contextlib
import shutil
from pathlib import Path

from sqlalchemy.orm import Session

from app.engine.adapters import AdapterLoadError, AdapterRef
from app.errors import Conflict, ModelNotFound
from app.model_refs import ReferencesTo
from app.registry.models import Adapter
from app.registry.repository import AdapterRepository


def find_adapter(session: Session, tenant: str, name: str) -> Adapter | None:
    return AdapterRepository(session, tenant).by_name(name)


def adapter_ref(row: Adapter, adapters_dir: Path) -> AdapterRef:
    root = adapters_dir.resolve()
    path = (root / row.path).resolve()
    # Weights are loaded only from inside the registry folder, whatever a row says.
    if not path.is_relative_to(root) or path == root:
        raise AdapterLoadError(
            f"Adapter '{row.name}' is not in the registry folder.", param="model"
        )
    return AdapterRef(name=row.name, path=path)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def delete_adapter(
    session: Session, tenant: str, name: str, adapters_dir: Path, references_to: ReferencesTo
) -> Adapter:
    """Remove the row, then the files, unless an alias, a template version or unfinished
    work still uses the adapter. The caller tells the engine to forget the name."""
    row = find_adapter(session, tenant, name)
    if row is None:
        raise ModelNotFound(name)
    users = references_to(name).users()
    if users:
        raise Conflict(
            f"Model '{name}' is used by {', '.join(users)}; repoint or delete them first.",
            param="model",
            code="model_in_use",
        )
    session.delete(row)
    session.commit()
    folder = (adapters_dir / row.path).resolve()
    if folder.parent == adapters_dir.resolve():  # never outside the adapters folder
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(folder)
    return row
