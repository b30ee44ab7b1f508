"""Desktop test setup: a stream tier, resources on the real targets, and a tunnel opener."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import Group
from django.test import Client

from portal.asgi import application
from streaming.desktop import vault
from streaming.desktop.guacamole.protocol import BROWSER_LIMITS, GUACD_LIMITS, InstructionReader, Limits
from streaming.desktop.recordings import stop_background_digests
from streaming.desktop.vault import TargetSecret
from tests.streaming.desktop.wsclient import WebsocketCommunicator
from tiers.models import Resource, Tier


@pytest.fixture(autouse=True)
def _no_digest_outlives_its_test():
    """A session ended in a test digests its recording in a background thread (eager Celery):
    it must not wait on into the next test's database."""
    yield
    stop_background_digests()


@pytest.fixture
def desktop_settings(settings, guacd, tmp_path):
    settings.GUACD_HOST = guacd.host
    settings.GUACD_PORT = guacd.port
    settings.PORTAL_RECORDINGS_DIR = tmp_path / "recordings"
    return settings


@pytest.fixture
def stream_tier(db) -> Tier:
    return Tier.objects.create(name="high", rank=20, access_mode="stream", mfa_read=900, mfa_write=900,
                               mfa_sensitive=300, recording=True, reauth_interval_seconds=30)


def make_resource(slug: str, kind: str, upstream: str, tier: Tier, secret: TargetSecret | None) -> Resource:
    resource = Resource.objects.create(slug=slug, name=f"Demo {kind.upper()}", kind=kind, upstream=upstream,
                                       tier=tier)
    resource.allowed_groups.add(Group.objects.get(name="employee"))
    if secret is not None:
        vault.store(resource, secret)
    return resource


@pytest.fixture
def vnc_resource(stream_tier, vnc_target, desktop_settings) -> Resource:
    return make_resource("ops-desktop", "vnc", vnc_target.upstream, stream_tier,
                         TargetSecret(password=vnc_target.password))


@pytest.fixture
def ssh_resource(stream_tier, ssh_target, desktop_settings) -> Resource:
    return make_resource("ops-shell", "ssh", ssh_target.upstream, stream_tier,
                         TargetSecret(username=ssh_target.username, password=ssh_target.password))


@pytest.fixture
def rdp_resource(stream_tier, rdp_target, desktop_settings) -> Resource:
    return make_resource("ops-rdp", "rdp", rdp_target.upstream, stream_tier,
                         TargetSecret(username=rdp_target.username, password=rdp_target.password))


@dataclass
class OpenedPage:
    """What the desktop page handed the browser: the tunnel path and the one-time ticket."""

    session_id: str
    tunnel: str
    ticket: str
    cookie: str
    html: str


def open_page(client: Client, slug: str) -> OpenedPage:
    response = client.get(f"/desktop/{slug}/")
    assert response.status_code == 200, response.content[:500]
    html = response.content.decode()
    tunnel = re.search(r'data-tunnel="([^"]+)"', html)[1]
    ticket = re.search(r'data-ticket="([^"]+)"', html)[1]
    return OpenedPage(tunnel.strip("/").split("/")[-1], tunnel, ticket, client.cookies["sessionid"].value, html)


def communicator(page: OpenedPage, *, ticket: str | None = None, cookie: str | None = None,
                 subprotocols: tuple[str, ...] = ("guacamole",), origin: str | None = "https://localhost",
                 host: str = "localhost", scheme: str = "wss",
                 extra_headers: tuple[tuple[bytes, bytes], ...] = ()) -> WebsocketCommunicator:
    path = f"{page.tunnel}?ticket={ticket if ticket is not None else page.ticket}&width=800&height=600&dpi=96"
    headers = [(b"cookie", f"sessionid={cookie if cookie is not None else page.cookie}".encode()),
               (b"host", host.encode()), *extra_headers]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return WebsocketCommunicator(application, path, subprotocols=list(subprotocols), headers=headers,
                                 scheme=scheme)


# guacamole-common-js 1.5.0 counts element lengths in UTF-16 code units, what it sends and reads.
AS_THE_BROWSER_READS = Limits(GUACD_LIMITS.max_instruction_length, GUACD_LIMITS.max_elements, utf16_lengths=True)


class Browser:
    """The browser's side of the tunnel: every message must hold whole instructions only."""

    def __init__(self, comm: WebsocketCommunicator) -> None:
        self.comm = comm
        self.received: list[str] = []
        self.instructions: list[tuple[str, tuple[str, ...]]] = []
        self.closed = False

    async def receive(self, timeout: float = 10) -> str | None:
        message = await self.comm.receive_output(timeout)
        if message["type"] == "websocket.close":
            self.closed = True
            self.close_message = message
            return None
        text = message["text"]
        self.received.append(text)
        reader = InstructionReader(AS_THE_BROWSER_READS)
        reader.feed_text(text)
        assert reader.pending == 0, f"a message ended inside an instruction: {text[-80:]!r}"
        while (ins := reader.pop()) is not None:
            self.instructions.append((ins.opcode, ins.args))
        return text

    async def until(self, predicate: Callable[[str, tuple[str, ...]], bool], timeout: float = 15) -> tuple:
        """Read until an instruction matching ``predicate`` arrives (or the tunnel closes)."""
        import time

        seen = len(self.instructions)
        deadline = time.monotonic() + timeout
        while True:
            for opcode, args in self.instructions[seen:]:
                if predicate(opcode, args):
                    return opcode, args
            seen = len(self.instructions)
            if self.closed:
                raise AssertionError(f"tunnel closed first; last: {self.instructions[-3:]}")
            left = deadline - time.monotonic()
            assert left > 0, f"not seen in time; last: {[i[0] for i in self.instructions[-20:]]}"
            await self.receive(timeout=left)

    async def until_closed(self, timeout: float = 5) -> None:
        import time

        deadline = time.monotonic() + timeout
        while not self.closed:
            left = deadline - time.monotonic()
            assert left > 0, "the tunnel did not close in time"
            await self.receive(timeout=left)

    async def send(self, text: str) -> None:
        await self.comm.send_to(text_data=text)

    def portal_notices(self, kind: str) -> list[str]:
        return [args[1] for op, args in self.instructions if op == "portal" and args and args[0] == kind]


__all__ = ["BROWSER_LIMITS", "Browser", "OpenedPage", "communicator", "make_resource", "open_live", "open_page"]


async def open_live(client: Client, resource: Resource) -> tuple[Browser, OpenedPage]:
    """Open the desktop page as ``client`` and connect its tunnel until guacd's first ``sync``."""
    page = await database_sync_to_async(open_page)(client, resource.slug)
    comm = communicator(page)
    connected, _ = await comm.connect(timeout=10)
    assert connected
    browser = Browser(comm)
    await browser.until(lambda op, args: op == "sync")
    return browser, page


@pytest.fixture
def client_factory(db) -> Callable[[str], Client]:
    """A signed-in (password + TOTP) HTTPS client for a new employee called ``username``."""
    from tests.conftest import https_client, sign_in
    from tests.factories import UserFactory, enrol_totp

    def make(username: str) -> Client:
        user = UserFactory(username=username, role="employee")
        user.totp = enrol_totp(user)
        client = https_client()
        sign_in(client, user)
        return client
    return make


async def wait_for_digest(session_id: str, *, timeout: float = 10) -> None:
    """Digest the session's recording once guacd has closed it (a moment after the end)."""
    from streaming.desktop.recordings import store_digest

    deadline = time.monotonic() + timeout
    while (state := await database_sync_to_async(store_digest)(session_id, settle_seconds=0.5)) != "stored":
        assert time.monotonic() < deadline, state
        await asyncio.sleep(0.2)
