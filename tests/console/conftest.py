"""Browser tests: Debian's chromium driven by Playwright, against a real uvicorn serving the
app on the tiny model and PostgreSQL (shared with a Celery worker where a test starts one)."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ADMIN_KEY
from tests.processes import WorkerProcess

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).parent / "screenshots"  # gitignored; for reviewers to look at
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def db_url(postgres_url: str) -> str:
    return postgres_url  # a worker process, where a test starts one, must see the same database


@pytest.fixture
def worker(start_worker) -> WorkerProcess:
    """A real `celery worker` process on this test's database and queue."""
    return start_worker()


# Package scope, not session: Playwright's sync API keeps an event loop running on the main
# thread while it lives, and later tests that call asyncio.run() would fail under it.
@pytest.fixture(scope="package")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make install` puts Debian's chromium there")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Watched:
    """A page plus what it must not do: script errors, CSP violations, dialogs (alert())."""

    def __init__(self, page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("dialog", self._dialog)

    def _console(self, message) -> None:
        # A page answered 4xx on purpose (a refused key, a bad file) is not a script error;
        # CSP violations ("Refused to ...") and exceptions are.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def goto(self, path: str):
        return self.page.goto(self.base_url + "/console" + path)

    def shot(self, name: str, *, phone: bool = False) -> Path:
        SCREENSHOTS.mkdir(exist_ok=True)
        path = SCREENSHOTS / f"{name}{'-390' if phone else ''}.png"
        if phone:
            self.page.set_viewport_size(PHONE)
        self.page.screenshot(path=str(path), full_page=True)
        if phone:
            self.page.set_viewport_size(DESKTOP)
        return path

    def fits_width(self) -> bool:
        """No sideways scrolling of the whole page (wide tables scroll inside their box)."""
        return self.page.evaluate(
            "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        )

    def assert_clean(self) -> None:
        assert self.dialogs == [], f"a script ran: {self.dialogs}"
        assert self.errors == [], f"browser errors: {self.errors}"


@pytest.fixture
def anonymous(browser, live_server: str) -> Iterator[Watched]:
    context = browser.new_context(viewport=DESKTOP)
    watched = Watched(context.new_page(), live_server)
    yield watched
    context.close()
    watched.assert_clean()


def sign_in(watched: Watched, key: str) -> None:
    watched.goto("/login")
    watched.page.get_by_label("API key").fill(key)
    watched.page.get_by_role("button", name="Sign in").click()
    watched.page.wait_for_url("**/console/")


@pytest.fixture
def admin(anonymous: Watched) -> Watched:
    sign_in(anonymous, ADMIN_KEY)
    return anonymous
