"""Headless Chromium (Debian's package, never a downloaded build) driven by Playwright."""

import os
import shutil

import pytest

from tests.factories import RegionFactory

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


# Module scope: sync_playwright keeps an event loop running in this thread while open, which would break
# pytest-asyncio tests that run later in the session.
@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed")
    # Playwright's sync API runs an event loop in this thread; the ORM calls made by fixtures are still sync.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def watch_csp(context) -> list[str]:
    """What Chromium refuses in this context under the Content-Security-Policy (it logs each refusal)."""
    refused: list[str] = []
    context.on(
        "console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None
    )
    return refused


@pytest.fixture
def page(browser):
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    # Every browser test also proves that what it did works under the console's Content-Security-Policy.
    refused = watch_csp(context)
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()
    assert refused == []


@pytest.fixture(autouse=True)
def _own_gateway_keys(settings):
    """Budgets, rate windows and the usage stream of this run stay apart from other runs sharing the Redis."""
    settings.GATEWAY_REDIS_PREFIX = f"test-br-{os.getpid()}:"


@pytest.fixture
def region(db):
    return RegionFactory()
