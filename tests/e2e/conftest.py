"""Chromium (Debian's, driven by Playwright) against the real portal over HTTPS."""

from __future__ import annotations

import pytest

from tests.server import run_portal


@pytest.fixture
def portal_url(transactional_db):
    with run_portal() as url:
        yield url


@pytest.fixture
def browser(chromium):
    return chromium


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
