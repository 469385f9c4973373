"""Everything under /console: the pages and the static files they use."""

from types import ModuleType

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.auth.service import Scope
from app.console.pages import (
    aliases,
    auth,
    evals,
    files,
    jobs,
    keys,
    overview,
    playground,
    templates,
)
from app.console.web import HERE, PREFIX, console_requires

# Each page module with the scope its every route needs, as the API mounts its routers
# (app/main.py): the console acts with the signed-in key's rights, no more. The overview
# checks itself (it sends a key without `manage` on to a page it may use).
PAGES: tuple[tuple[ModuleType, Scope | None], ...] = (
    (auth, None),
    (overview, None),
    (templates, "manage"),
    (playground, "inference"),
    (files, "manage"),
    (jobs, "manage"),
    (evals, "manage"),
    (aliases, "manage"),
    (keys, "admin"),
)


def install(app: FastAPI) -> None:
    for page, scope in PAGES:
        dependencies = [console_requires(scope)] if scope is not None else []
        app.include_router(
            page.router, prefix=PREFIX, include_in_schema=False, dependencies=dependencies
        )
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console-static")
