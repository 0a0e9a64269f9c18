"""A real app server and Debian's Chromium driven by Playwright (never `playwright install`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.app_server import AppServerError, free_port, running_app  # noqa: F401 (free_port for the tests)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/browser" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


@contextmanager
def serve_app(log_dir: Path, env: dict[str, str], args: tuple[str, ...] = (), *,
              port: int | None = None) -> Iterator[str]:
    """:func:`tests.app_server.running_app` for a test: yields the app's URL, and fails the test
    when the server does not start."""
    try:
        with running_app(log_dir, env, args, port=port) as app:
            yield app.url
    except AppServerError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def app_url(tmp_path_factory, analysed_workspace):
    """Start the app for the whole session, on a workspace where the bundled samples are already
    analysed."""
    with serve_app(tmp_path_factory.mktemp("server"), {"CARTOGRAPHER_WORKSPACE": str(analysed_workspace)}) as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.fail("Chromium is not installed at /usr/bin/chromium; `make test` installs it "
                    "(apt-get install -y chromium).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(app_url)
    page.wait_for_selector("[data-testid=stApp]")
    yield page
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


def pick(page, label: str, option: str) -> None:
    """Choose ``option`` in the Streamlit selectbox labelled ``label``."""
    page.locator("[data-testid=stSelectbox]").filter(has_text=label).first.click()
    page.get_by_role("option", name=option, exact=True).click()


def wait_idle(page) -> None:
    """Wait until Streamlit has finished rerunning the script."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=60_000)
