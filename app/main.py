"""create_app(): routers, error handlers, and the lifespan that loads the engine."""

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from app import health
from app import models as _models  # noqa: F401 - every table mapped, flushes audited
from app.aliases.router import router as aliases_router
from app.audit.router import router as audit_router
from app.auth import service as auth_service
from app.auth.dependencies import requires
from app.auth.rate_limit import RateLimiter
from app.auth.router import router as auth_router
from app.background.reaper import Reaper
from app.console.router import install as install_console
from app.console.web import PREFIX as CONSOLE_PREFIX
from app.console.web import too_large_page
from app.db import get_sessionmaker
from app.engine.factory import build_engine
from app.engine.protocol import InferenceEngine
from app.errors import LastResort, install_error_handlers
from app.evals.router import router as evals_router
from app.files.router import router as files_router
from app.finetune.router import router as finetune_router
from app.graders.router import router as graders_router
from app.inference.router import router as inference_router
from app.limits import BodySizeLimit
from app.observability.metrics import EngineSampler
from app.observability.middleware import RequestObserver
from app.observability.router import router as metrics_router
from app.observability.router import serve_on_port
from app.observability.task_ids import install_request_ids
from app.protocol.errors import ERROR_RESPONSES
from app.protocol.params import check_request_text
from app.registry.router import router as registry_router
from app.settings import Settings, get_settings
from app.shutdown import GracefulShutdown
from app.templates.router import router as templates_router

log = logging.getLogger("adaptd")


def _load_engine(app: FastAPI, settings: Settings) -> None:
    try:
        engine = build_engine(settings)
        app.state.engine = engine
        log.info("model %s ready on the %s engine", engine.name, engine.kind)
    except Exception:
        log.exception("loading the engine failed")


def create_app(engine: InferenceEngine | None = None, settings: Settings | None = None) -> FastAPI:
    """`engine` lets tests share one loaded model across apps; otherwise it loads at startup
    in the background, so /healthz answers at once and /readyz turns green when it is up."""
    settings = settings or get_settings()
    install_request_ids()  # the request id goes with the Celery tasks a request sends

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        admin_key = settings.admin_key()
        if admin_key:
            with get_sessionmaker()() as session:
                auth_service.ensure_admin_key(session, admin_key)
        app.state.engine = engine
        shutdown = GracefulShutdown(
            app.state, settings.shutdown_drain_s, settings.shutdown_grace_s
        ).install()
        if engine is None:
            threading.Thread(target=_load_engine, args=(app, settings), daemon=True).start()
        else:
            engine.start()
        # Fails or re-queues fine-tuning jobs whose worker died, with no one watching.
        reaper = Reaper().start()
        sampler = EngineSampler(app.state, settings.metrics_sample_interval_s).start()
        app.state.metrics_sampler = sampler
        metrics_server = None
        if settings.metrics_port:
            metrics_server = serve_on_port(settings.metrics_port, settings.metrics_host, sampler)
        yield
        shutdown.uninstall()
        if metrics_server is not None:
            metrics_server.shutdown()
        sampler.stop()
        reaper.stop()
        if engine is None and getattr(app.state, "engine", None) is not None:
            app.state.engine.stop()

    app = FastAPI(
        title="adaptd",
        version="0.1.0",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        # No NUL or lone surrogate in a path, query or form (JSON bodies: RequestModel).
        dependencies=[Depends(check_request_text)],
    )
    install_error_handlers(app)
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_minute)
    app.add_middleware(
        BodySizeLimit,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        # The console's upload form is a browser's: its refusal is a page, not JSON.
        error_pages={f"{CONSOLE_PREFIX}/files": too_large_page},
    )
    app.add_middleware(LastResort)  # any unexpected error: a 500 envelope, connection kept
    app.add_middleware(RequestObserver)  # outermost: every answer gets an id and a log line
    app.include_router(health.router)
    app.include_router(metrics_router)
    app.include_router(auth_router)  # every route needs the admin scope
    app.include_router(audit_router)  # admin scope too
    # Scopes: `inference` runs models, `manage` changes what the tenant has, `admin` keys.
    app.include_router(inference_router, dependencies=[requires("inference")])
    for router in (
        templates_router,
        files_router,
        finetune_router,
        graders_router,
        registry_router,
        aliases_router,
        evals_router,
    ):
        app.include_router(router, dependencies=[requires("manage")])
    install_console(app)  # the web console at /console
    return app
