"""Fine-tuning: start a job from a form; the job page follows it live (progress, loss curve,
events, checkpoints) and can cancel it."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from app.charts.responses import svg_response
from app.console.session import ConsoleSession, still_signed_in
from app.console.web import ConsoleDep, ConsoleRoute, FormConsoleDep, redirect, render
from app.db import SessionDep, get_sessionmaker
from app.dependencies import base_model_name
from app.engine.protocol import InferenceEngine
from app.errors import APIError
from app.files import service as files
from app.finetune import auto_settings
from app.finetune import service as finetune
from app.finetune.charts import loss_curve_svg
from app.finetune.schemas import JobCreate, JobRead
from app.settings import get_settings
from app.status import TERMINAL, Status

router = APIRouter(route_class=ConsoleRoute)

HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")

LORA = ("r", "alpha", "dropout")
LIVE_INTERVAL_S = 1.0


def _base_parameters(request: Request) -> int | None:
    """The base model's size, which the automatic learning rate depends on (the adapters'
    own LoRA weights, loaded into the same model, left out)."""
    engine: InferenceEngine | None = getattr(request.app.state, "engine", None)
    return engine.base_parameters() if engine is not None else None


def _auto_values(request: Request, n_examples: int) -> dict[str, Any]:
    """What "auto" becomes for a file of this size: the rule the trainer applies (on the
    training split, which is the whole file under 50 examples or with a validation file)."""
    return auto_settings.resolve({}, n_examples, n_params=_base_parameters(request))


def _page(
    request: Request,
    console: ConsoleSession,
    session: Session,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    tenant = console.principal.tenant
    rows, _ = files.list_files(
        session, tenant, purpose="fine-tune", limit=200, after=None, order="desc"
    )
    jobs, _ = finetune.list_page(session, tenant, after=None, limit=50)
    return render(
        request,
        "jobs.html",
        {
            "files": [(f, _auto_values(request, f.num_examples)) for f in rows],
            "jobs": [finetune.to_read(j) for j in jobs],
            "values": values or {},
            "errors": errors or {},
            "base": base_model_name(),
        },
        console=console,
        status_code=status_code,
    )


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, console: ConsoleDep, session: SessionDep) -> Response:
    return _page(request, console, session)


def _job_body(form: FormData) -> tuple[dict[str, str], dict[str, Any]]:
    values = {k: v.strip() for k, v in form.items() if isinstance(v, str)}
    hyper: dict[str, Any] = {k: values[k] for k in HYPERPARAMETERS + LORA if values.get(k)}
    modules = [m.strip() for m in values.get("target_modules", "").split(",") if m.strip()]
    if modules:
        hyper["target_modules"] = modules
    body: dict[str, Any] = {
        "model": base_model_name(),
        "training_file": values.get("training_file", ""),
        "validation_file": values.get("validation_file") or None,
        "suffix": values.get("suffix") or None,
        "seed": values.get("seed") or None,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
    }
    return values, body


def _field_errors(exc: Exception) -> dict[str, str]:
    errors: dict[str, str] = {}
    if isinstance(exc, ValidationError):
        for error in exc.errors():
            field = next(
                (
                    str(p)
                    for p in reversed(error["loc"])
                    if isinstance(p, str) and p != "hyperparameters"
                ),
                "form",
            )
            errors.setdefault(field, error["msg"].removeprefix("Value error, "))
    elif isinstance(exc, APIError):
        field = (exc.param or "form").rsplit(".", 1)[-1]
        errors[field] = exc.message
    return errors


def _module_names(request: Request) -> set[str] | None:
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        return None  # the worker checks them again
    return engine.lora_target_names()


@router.post("/jobs")
async def create_job(request: Request, console: FormConsoleDep, session: SessionDep) -> Response:
    values, body = _job_body(await request.form())
    settings = get_settings()
    modules = _module_names(request)

    def start() -> str:
        row = finetune.create(
            session,
            console.principal.tenant,
            JobCreate(**body),
            base_name=base_model_name(),
            max_active=settings.max_active_jobs_per_tenant,
            module_names=modules,
            microbatch_tokens=settings.train_microbatch_tokens,
        )
        return row.id

    try:
        job_id = await run_in_threadpool(start)
    except (ValidationError, APIError) as exc:
        status = exc.status_code if isinstance(exc, APIError) else 400
        errors = _field_errors(exc)
        return _page(request, console, session, values=values, errors=errors, status_code=status)
    return redirect(f"/jobs/{job_id}")


def _snapshot(tenant: str, job_id: str) -> tuple[JobRead, dict[str, Any]]:
    """The job, and everything the job page shows of it as JSON for the live view."""
    with get_sessionmaker()() as session:
        job = finetune.get(session, tenant, job_id)
        events, _ = finetune.list_events(session, tenant, job_id, after=None, limit=100)
        checkpoints, _ = finetune.list_checkpoints(session, tenant, job_id, after=None, limit=10)
        read = finetune.to_read(job)
    latest = next((e.data for e in events if e.type == "metrics" and e.data), None) or {}
    step, total = latest.get("step"), latest.get("total_steps")
    if job.status == Status.SUCCEEDED:
        percent = 100.0
    elif isinstance(step, int) and isinstance(total, int) and total > 0:
        percent = round(100.0 * step / total, 1)
    else:
        percent = 0.0
    return read, {
        "status": read.status,
        "terminal": read.status in TERMINAL,
        "percent": percent,
        "step": step,
        "total_steps": total,
        "eta_seconds": latest.get("eta_seconds") if read.status == Status.RUNNING else None,
        "train_loss": latest.get("train_loss"),
        "valid_loss": latest.get("valid_loss"),
        "fine_tuned_model": read.fine_tuned_model,
        "error": read.error.model_dump() if read.error else None,
        "events": [
            {"id": e.id, "created_at": finetune.event_to_read(e).created_at, "message": e.message}
            for e in events
        ],
        "checkpoints": [
            {
                "model": c.fine_tuned_model_checkpoint,
                "step": c.step,
                "metrics": c.metrics or {},
            }
            for c in checkpoints
        ],
    }


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(job_id: str, request: Request, console: ConsoleDep) -> Response:
    job, snapshot = await run_in_threadpool(_snapshot, console.principal.tenant, job_id)
    return render(request, "job.html", {"job": job, "live": snapshot}, console=console)


@router.get("/jobs/{job_id}/live")
async def job_live(job_id: str, request: Request, console: ConsoleDep) -> Response:
    """Server-sent events: the page's state whenever it changes, until the job is over."""
    tenant = console.principal.tenant
    await run_in_threadpool(_snapshot, tenant, job_id)  # 404 before the stream starts

    async def events() -> AsyncIterator[str]:
        sent = None
        while not await request.is_disconnected():
            if not await run_in_threadpool(still_signed_in, request):
                yield "event: end\ndata: {}\n\n"  # signed out or the key was revoked
                return
            _, snapshot = await run_in_threadpool(_snapshot, tenant, job_id)
            payload = json.dumps(snapshot)
            if payload != sent:
                yield f"data: {payload}\n\n"
                sent = payload
            if snapshot["terminal"]:
                yield "event: end\ndata: {}\n\n"
                return
            await asyncio.sleep(LIVE_INTERVAL_S)

    return StreamingResponse(events(), media_type="text/event-stream")


@router.get("/jobs/{job_id}/loss.svg")
def loss_svg(job_id: str, console: ConsoleDep, session: SessionDep) -> Response:
    """The API's own loss chart (GET /v1/fine_tuning/jobs/{id}/loss.svg), for this session."""
    job = finetune.get(session, console.principal.tenant, job_id)
    return svg_response(loss_curve_svg(session, job))


@router.post("/jobs/{job_id}/cancel")
def cancel(job_id: str, console: FormConsoleDep, session: SessionDep) -> Response:
    finetune.cancel(session, console.principal.tenant, job_id)
    return redirect(f"/jobs/{job_id}")
