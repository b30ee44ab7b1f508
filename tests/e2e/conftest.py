"""Chromium (Debian's, driven by Playwright) against the real portal over HTTPS."""

from __future__ import annotations

import os

import pytest

from tests.conftest import require
from tests.server import run_portal

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]



@pytest.fixture
def portal_url(transactional_db):
    with run_portal() as url:
        yield url


@pytest.fixture
def browser(monkeypatch):
    require(os.path.exists(CHROMIUM), "Debian's chromium at /usr/bin/chromium")
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls
    # between page actions are still plain synchronous calls.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture(autouse=True)
def _fast_password_hashing():
    """Overrides the suite-wide fast hasher: the server process checks passwords with the real one."""
