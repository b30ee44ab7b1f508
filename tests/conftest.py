"""Shared fixtures: HTTPS test clients, signed-in users, and the real-component guard.

A test that needs a component that is missing is skipped on a developer's machine, and
fails in CI (CI=true): the suite must never go green by skipping what it claims to test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterator

import pytest
from django.core.cache import cache
from django.test import Client

from tests.factories import PASSWORD, UserFactory, enrol_totp, totp_code

pytest_plugins = ["tests.fixtures.targets", "tests.fixtures.portal_server"]

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _closing_connections_at_thread_end() -> None:
    """Every thread of the test process gives its database connections back when it ends.

    Django keeps a connection per thread and never closes one a finished thread held; with
    psycopg's pool each such connection stays checked out for good. Tests run many short
    threads (a fresh event loop's executor per test, live servers), and over a full run
    they drained the pool (20) until a later test waited 5 s and failed. A portal keeps its
    threads for its lifetime, so this concerns the test process only.
    """
    from django.db import connections

    run = threading.Thread.run

    def run_then_close(self: threading.Thread) -> None:
        try:
            run(self)
        finally:
            connections.close_all()

    threading.Thread.run = run_then_close  # type: ignore[method-assign]


_closing_connections_at_thread_end()


def require(condition: bool, what: str) -> None:
    """Skip locally, fail in CI, when a real component the test needs is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing, and CI must not skip it")
    pytest.skip(f"{what} is missing")


def require_binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    require(path is not None, f"the program {name!r}")
    return path  # type: ignore[return-value]


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Real hashing costs ~0.3 s a login; the tests are about flows, not PBKDF2."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _path_mode_unless_asked(request, settings):
    """Most proxy tests speak ``/apps/<slug>/`` on the portal's origin (path mode); tests of
    one origin per app (host mode, the default outside tests) mark themselves ``host_mode``."""
    if request.node.get_closest_marker("host_mode") is None:
        settings.PORTAL_APPS_DOMAIN = ""
    else:
        settings.PORTAL_APPS_DOMAIN = "apps.localhost"


@pytest.fixture(autouse=True)
def _fresh_channel_layer():
    """Each test gets channel layers of its own: a Redis layer's locks belong to the event loop
    that first used them, and every async test runs in a loop of its own."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def _clean_cache():
    """Throttle counters live in the cache (Redis in CI): no test inherits another's."""
    cache.clear()
    yield
    cache.clear()


class HttpsClient(Client):
    """The portal is HTTPS-only: every request of this client arrives as if through TLS."""

    def generic(self, *args, **kwargs):  # type: ignore[override]
        kwargs["secure"] = True
        return super().generic(*args, **kwargs)


def https_client(**kwargs: object) -> Client:
    return HttpsClient(**kwargs)


@pytest.fixture
def client() -> Client:
    return https_client()


@pytest.fixture
def csrf_client() -> Client:
    return https_client(enforce_csrf_checks=True)


@pytest.fixture
def employee(db):
    user = UserFactory(username="erin", role="employee")
    user.totp = enrol_totp(user)
    return user


def sign_in(client: Client, user, *, with_mfa: bool = True) -> None:
    """Sign ``user`` in through the real forms (password, then a TOTP code)."""
    response = client.post("/accounts/login/", {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302, response.content[:500]
    if with_mfa:
        response = client.post("/accounts/mfa/verify/", {"otp_token": totp_code(user.totp)})
        assert response.status_code == 302, response.content[:500]


@pytest.fixture
def signed_in_employee(client, employee):
    sign_in(client, employee)
    return employee


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture
def chromium(monkeypatch):
    """Debian's Chromium, driven by Playwright (fails in CI when missing, like every component)."""
    require(os.path.exists(CHROMIUM), "Debian's chromium at /usr/bin/chromium")
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls
    # between page actions are still plain synchronous calls.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()



@contextlib.contextmanager
def page_with_passkeys(browser, *, width: int = 1280, height: int = 800) -> Iterator[object]:
    """A page in a fresh context whose browser has a platform authenticator that holds
    passkeys and verifies its user (Chrome DevTools' WebAuthn domain), as a laptop would."""
    context = browser.new_context(ignore_https_errors=True, viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(15_000)
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": True}})
    try:
        yield page
    finally:
        context.close()
