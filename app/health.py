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
    checks = {"model": bool(engine is not None and engine.running), "database": True}
    try:
        with get_sessionmaker()() as session:
            session.execute(text("SELECT 1"))
    except Exception:  # any failure means not ready
        checks["database"] = False
    # After SIGTERM (app/shutdown.py): still serving, but send no more traffic here.
    checks["accepting"] = not getattr(request.app.state, "draining", False)
    ready = all(checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )
