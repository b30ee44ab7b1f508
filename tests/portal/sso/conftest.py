"""An OpenID Provider with a few people, the portal configured to trust it, a logout catcher."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
from django.test import Client

from tests.fixtures.oidc import OpBrowser, RunningOP, client_config, run_op

CALLBACK = "https://testserver/sso/corp/callback/"

PEOPLE = {
    # MFA at the IdP, in the engineering group.
    "nina": {"email": "nina@corp.example", "groups": ["engineering"], "amr": ["pwd", "mfa"]},
    # Password only at the IdP.
    "paul": {"email": "paul@corp.example", "groups": ["sales"], "amr": ["pwd"]},
    # The IdP says MFA through an acr value rather than amr.
    "ada": {"email": "ada@corp.example", "groups": [], "amr": ["pwd"], "acr": "urn:example:mfa"},
    # An address the IdP has not verified.
    "mallory": {"email": "boss@corp.example", "email_verified": False, "groups": [], "amr": ["pwd", "mfa"]},
    "boss": {"email": "boss@corp.example", "groups": [], "amr": ["pwd", "mfa"]},
}
GROUPS = {"engineering": ("employee", "eng"), "sales": ("employee",)}


class LogoutCatcher:
    """Stands where the OP delivers back-channel logout tokens, and keeps them for the test."""

    def __init__(self) -> None:
        tokens = self.tokens = []
        self.arrived = threading.Event()
        catcher = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                tokens.extend(parse_qs(body).get("logout_token", []))
                catcher.arrived.set()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/logout"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count: int = 1, timeout: float = 5.0) -> list[str]:
        import time

        deadline = time.monotonic() + timeout
        while len(self.tokens) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.tokens) >= count, "the OP sent no logout token"
        return list(self.tokens)


@pytest.fixture(scope="module")
def logout_catcher() -> Iterator[LogoutCatcher]:
    catcher = LogoutCatcher()
    yield catcher
    catcher.server.shutdown()


@pytest.fixture(scope="module")
def op(logout_catcher: LogoutCatcher) -> Iterator[RunningOP]:
    """One OP for the module: the portal (at testserver) as client; logout tokens to the catcher."""
    client = {**client_config("https://testserver"), "backchannel_logout_uri": logout_catcher.url}
    with run_op([client], PEOPLE) as running:
        yield running


@pytest.fixture
def corp(op: RunningOP, settings):
    """The portal trusts the OP as "corp", with the group mapping and MFA rules of the tests."""
    provider = op.provider(groups=GROUPS, mfa_acr=("urn:example:mfa",))
    settings.PORTAL_OIDC_PROVIDERS = (provider,)
    return provider


@pytest.fixture
def idp_browser() -> Iterator[OpBrowser]:
    browser = OpBrowser()
    yield browser
    browser.close()


def sso_sign_in(client: Client, browser: OpBrowser, login: str, next_url: str = "/"):
    """Start at the portal, sign in at the OP's pages, come back: the portal's last answer."""
    start = client.get(f"/sso/corp/login/?next={next_url}")
    assert start.status_code == 302, start.content[:500]
    callback = browser.sign_in(start["Location"], login, until=CALLBACK)
    return client.get(callback.removeprefix("https://testserver"))
