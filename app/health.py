from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.db import get_sessionmaker

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    engine = getattr(request.app.state, "engine", None)
    details = engine.health() if engine is not None else {"engine": None}
    # A vLLM engine is ready when at least one of its servers is.
    ready_engine = engine is not None and engine.running and details.pop("ready", True)
    checks = {"model": bool(ready_engine), "database": True}
    try:
        with get_sessionmaker()() as session:
            session.execute(text("SELECT 1"))
    except Exception:  # any failure means not ready
        checks["database"] = False
    # After SIGTERM (app/shutdown.py): still serving, but send no more traffic here.
    checks["accepting"] = not getattr(request.app.state, "draining", False)
    ready = all(checks.values())
    body = {"status": "ready" if ready else "not_ready", "checks": checks}
    body.update(details)
    return JSONResponse(
        body,
        status_code=200 if ready else 503,
    )
