"""Evaluations: start one; the report page (chart, table, pairwise tests, recommendation,
per-example answers) and one button to point an alias at the recommended variant."""

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.aliases.schemas import AliasTarget
from app.broker import EVALUATE_TASK, enqueue
from app.charts.responses import svg_response
from app.console.pages.aliases import point_alias
from app.console.session import ConsoleSession
from app.console.variants import callable_models
from app.console.web import ConsoleDep, ConsoleRoute, FormConsoleDep, redirect, render
from app.db import SessionDep
from app.dependencies import base_model_name
from app.errors import APIError, BadRequest
from app.evals import service as evals
from app.evals.charts import accuracy_cost_svg
from app.evals.schemas import EvalCreate
from app.files import service as files
from app.routing.resolve import variant_checks
from app.status import TERMINAL

router = APIRouter(route_class=ConsoleRoute)


def _recent(session: Session, tenant: str) -> list:
    rows, _ = evals.list_page(session, tenant, None, 50)
    return [evals.read(r) for r in rows]


def _page(
    request: Request,
    console: ConsoleSession,
    session: Session,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    tenant = console.principal.tenant
    rows, _ = files.list_files(session, tenant, purpose=None, limit=200, after=None, order="desc")
    return render(
        request,
        "evals.html",
        {
            "files": [files.to_read(r) for r in rows],
            "models": callable_models(session, tenant),
            "evals": _recent(session, tenant),
            "values": values or {"variants": [], "metric": "label", "max_tokens": "16"},
            "errors": errors or {},
        },
        console=console,
        status_code=status_code,
    )


@router.get("/evals", response_class=HTMLResponse)
def evals_page(request: Request, console: ConsoleDep, session: SessionDep) -> Response:
    return _page(request, console, session)


def _field(location: str) -> str:
    head = location.split(".", 1)[0]
    return {"file_id": "file_id", "variants": "variants", "metric": "metric"}.get(
        head, "max_tokens" if location.startswith("generation") else "limit"
    )


@router.post("/evals")
async def create_eval(request: Request, console: FormConsoleDep, session: SessionDep) -> Response:
    form = await request.form()
    values: dict[str, Any] = {
        "file_id": form.get("file_id") or "",
        "variants": [v for v in form.getlist("variants") if isinstance(v, str)],
        "metric": form.get("metric") or "label",
        "max_tokens": form.get("max_tokens") or "16",
        "limit": form.get("limit") or "",
    }

    def start() -> str:
        body = EvalCreate(
            file_id=values["file_id"],
            variants=values["variants"],
            metric=values["metric"],
            generation={"max_tokens": values["max_tokens"]},
            limit=values["limit"] or None,
        )
        tenant = console.principal.tenant
        check = variant_checks(session, tenant, base_model_name())
        row = evals.create(session, tenant, body, check)
        enqueue(EVALUATE_TASK, row.id)  # after the commit, as the API does
        return row.id

    try:
        eval_id = await run_in_threadpool(start)
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for e in exc.errors():
            location = ".".join(str(p) for p in e["loc"])
            errors.setdefault(_field(location), e["msg"].removeprefix("Value error, "))
        return _page(request, console, session, values=values, errors=errors, status_code=400)
    except APIError as exc:
        errors = {_field(exc.param or ""): exc.message}
        return _page(
            request, console, session, values=values, errors=errors, status_code=exc.status_code
        )
    return redirect(f"/evals/{eval_id}")


def disagreements(report: dict[str, Any]) -> list[bool]:
    """Per example: did the variants give different answers (compared as the metric sees
    them: correct or not, or the text when correctness agrees)?"""
    out = []
    for example in report.get("examples", []):
        answers = list(example["answers"].values())
        verdicts = {a["correct"] for a in answers}
        texts = {(a["answer"] or "").strip() for a in answers}
        out.append(len(verdicts) > 1 or len(texts) > 1)
    return out


@router.get("/evals/{eval_id}", response_class=HTMLResponse)
def eval_page(
    eval_id: str,
    request: Request,
    console: ConsoleDep,
    session: SessionDep,
    disagree: bool = False,
) -> Response:
    tenant = console.principal.tenant
    ev = evals.read(evals.get(session, tenant, eval_id))
    report = ev.report or {}
    flags = disagreements(report)
    examples = [
        (i + 1, example)
        for i, (example, differs) in enumerate(zip(report.get("examples", []), flags, strict=True))
        if differs or not disagree
    ]
    return render(
        request,
        "eval.html",
        {
            "ev": ev,
            "report": report,
            "examples": examples,
            "disagree": disagree,
            "disagreeing": sum(flags),
            "events": evals.events(session, tenant, eval_id)[::-1],
            "terminal": ev.status in TERMINAL,
        },
        console=console,
    )


@router.get("/evals/{eval_id}/state")
def eval_state(eval_id: str, console: ConsoleDep, session: SessionDep) -> Response:
    ev = evals.get(session, console.principal.tenant, eval_id)
    events = evals.events(session, console.principal.tenant, eval_id)
    return JSONResponse(
        {
            "status": ev.status,
            "terminal": ev.status in TERMINAL,
            "last_event": events[-1].message if events else None,
        }
    )


@router.get("/evals/{eval_id}/chart.svg")
def eval_chart(eval_id: str, console: ConsoleDep, session: SessionDep) -> Response:
    """The API's own chart (GET /v1/evals/{id}/chart.svg), for this session."""
    return svg_response(accuracy_cost_svg(evals.get(session, console.principal.tenant, eval_id)))


@router.post("/evals/{eval_id}/promote")
def promote(
    eval_id: str,
    console: FormConsoleDep,
    session: SessionDep,
    alias: Annotated[str, Form()] = "",
) -> Response:
    """Point an alias (made if missing) at the report's recommended variant, alone."""
    tenant = console.principal.tenant
    report = evals.get(session, tenant, eval_id).report or {}
    recommended = (report.get("recommendation") or {}).get("variant")
    if not recommended:
        raise BadRequest("This evaluation has no recommendation yet.", param="eval_id")
    try:
        point_alias(session, tenant, alias.strip(), [AliasTarget(model=recommended)])
    except ValidationError as exc:
        raise BadRequest(
            "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors()), param="alias"
        ) from None
    return redirect(f"/aliases/{alias.strip()}")
