"""Playground: one input to 2-4 variants, answers streamed side by side."""

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from app.console.variants import callable_models
from app.console.web import ConsoleDep, ConsoleRoute, FormConsoleDep, render
from app.db import SessionDep
from app.dependencies import EngineDep
from app.inference import router as inference
from app.protocol.chat import ChatCompletionRequest

router = APIRouter(route_class=ConsoleRoute)


class PlaygroundRun(BaseModel):
    model: str = Field(min_length=1, max_length=512)
    input: str = Field(min_length=1, max_length=32_000)
    max_tokens: int = Field(default=64, ge=1, le=4096)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)


@router.get("/playground", response_class=HTMLResponse)
def playground(
    request: Request, console: ConsoleDep, session: SessionDep, model: str | None = None
) -> Response:
    models = callable_models(session, console.principal.tenant)
    # A variant asked for by a link comes first, beside the next one listed.
    chosen = [model, *(m for m in models if m != model)][:2] if model in models else models[:2]
    return render(request, "playground.html", {"models": models, "chosen": chosen}, console=console)


@router.post("/playground/stream")
async def stream(
    http_request: Request,
    run: PlaygroundRun,
    console: FormConsoleDep,
    session: SessionDep,
    engine: EngineDep,
) -> Response:
    """The chat completions endpoint itself, streamed with usage, as this key's tenant."""
    request = ChatCompletionRequest(
        model=run.model,
        messages=[{"role": "user", "content": run.input}],
        max_tokens=run.max_tokens,
        temperature=run.temperature,
        stream=True,
        stream_options={"include_usage": True},
    )
    return await inference.chat_completions(
        request, console.principal, session, engine, http_request, Response()
    )
