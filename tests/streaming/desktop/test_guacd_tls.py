"""TLS between the portal and guacd (principle 3: encryption on every channel).

guacd started with ``-C``/``-K`` speaks TLS only; with ``GUACD_TLS`` the portal verifies its
certificate and host name before the handshake. Anything else fails closed, with a reason a
person can read: a desktop never opens over a channel the portal did not verify.
"""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Iterator

import pytest
from channels.db import database_sync_to_async

from demo.targets import GuacdProcess, TargetError, start_guacd
from portal.config import ConfigError, load_config
from streaming.desktop import broker
from streaming.desktop.models import StreamSession
from tests.conftest import require, require_binary, sign_in
from tests.streaming.desktop.conftest import Browser, communicator, open_live, open_page
from tests.upstreams.launch import tls_files

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("guacd-tls")
    tls_files(directory)  # ca.pem, server.pem, server-key.pem for 127.0.0.1 / localhost
    return directory


@pytest.fixture(scope="module")
def tls_guacd(tls_dir) -> Iterator[GuacdProcess]:
    require_binary("guacd")
    try:
        process = start_guacd(tls_dir / "run", tls=(tls_dir / "server.pem", tls_dir / "server-key.pem"))
    except TargetError as exc:
        require(False, f"guacd with TLS ({exc})")
        raise
    yield process
    process.stop()


@pytest.fixture
def signed_in(client, employee):
    sign_in(client, employee)
    return client


@pytest.fixture
def over_tls(desktop_settings, tls_guacd, tls_dir):
    desktop_settings.GUACD_HOST, desktop_settings.GUACD_PORT = tls_guacd.host, tls_guacd.port
    desktop_settings.GUACD_TLS, desktop_settings.GUACD_CA_FILE = True, tls_dir / "ca.pem"
    return desktop_settings


async def _refused(client, resource) -> tuple[tuple[str, ...], StreamSession]:
    page = await database_sync_to_async(open_page)(client, resource.slug)
    comm = communicator(page)
    connected, _ = await comm.connect(timeout=10)
    assert connected
    browser = Browser(comm)
    _op, args = await browser.until(lambda op, _args: op == "error", timeout=20)
    await browser.until_closed()
    stream = await database_sync_to_async(StreamSession.objects.get)(pk=page.session_id)
    return args, stream


async def test_a_desktop_opens_over_verified_tls(signed_in, vnc_resource, over_tls):
    browser, _page = await open_live(signed_in, vnc_resource)
    await browser.until(lambda op, _args: op in ("img", "png"))
    await browser.send("10.disconnect;")
    await browser.until_closed()


def test_readiness_checks_the_tls_handshake(over_tls, tls_guacd):
    broker.check_guacd()  # verified: no exception
    over_tls.GUACD_CA_FILE = None  # the system's trust store does not know the demo CA
    with pytest.raises(ssl.SSLCertVerificationError):
        broker.check_guacd()


async def test_an_untrusted_guacd_certificate_ends_the_session_before_any_handshake(
        signed_in, vnc_resource, over_tls):
    over_tls.GUACD_CA_FILE = None
    args, stream = await _refused(signed_in, vnc_resource)
    assert "cannot be reached" in args[0]
    assert (stream.state, stream.end_reason) == ("ended", "guacd_error")


async def test_a_portal_without_tls_cannot_use_a_tls_guacd(signed_in, vnc_resource, over_tls):
    over_tls.GUACD_TLS = False  # plain Guacamole protocol against a TLS-only guacd
    args, stream = await _refused(signed_in, vnc_resource)
    assert "cannot be reached" in args[0]
    assert (stream.state, stream.end_reason) == ("ended", "guacd_error")


def test_a_missing_ca_file_stops_the_portal_at_start(tmp_path):
    with pytest.raises(ConfigError, match="GUACD_CA_FILE"):
        load_config({"GUACD_TLS": "1", "GUACD_CA_FILE": str(tmp_path / "nowhere.pem"),
                     "PORTAL_SECRET_KEY": secrets.token_urlsafe(64)})
