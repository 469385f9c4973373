"""The files one tenant may read."""

from app.files.models import File
from app.repository import TenantRepository


class FileRepository(TenantRepository[File]):
    model = File
