"""Everything under /console: the pages and the static files they use."""

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.console.pages import aliases, auth, evals, files, jobs, overview, playground, templates
from app.console.web import HERE, PREFIX

PAGES = (auth, overview, templates, playground, files, jobs, evals, aliases)


def install(app: FastAPI) -> None:
    for page in PAGES:
        app.include_router(page.router, prefix=PREFIX, include_in_schema=False)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console-static")
