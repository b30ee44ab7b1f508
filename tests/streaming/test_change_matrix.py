"""The change matrix: every policy change reaches another portal process within two seconds.

Two real portal processes share PostgreSQL and Redis. Erin has a live VNC desktop open
through process 2 (real guacd, real x11vnc) and has just used a web app through process 2's
proxy (so its next request would be answered from memory). Each change below is made
elsewhere — through process 1 or with the ORM in this test process, which publishes through
Redis as a portal would (tiers/changes.py) — and within two seconds the desktop on process 2
re-checks and ends or holds, and the proxy's next request there is decided on the new state.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connection
from django.utils import timezone
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from portal.accounts.lockout import lock_user
from streaming.desktop import vault
from streaming.desktop.vault import TargetSecret
from tests.conftest import require
from tests.factories import UserFactory, enrol_totp
from tests.server import TLS_DIR, run_portal
from tests.streaming.proxy.conftest import session_cookie_for
from tests.upstreams.launch import run_echo
from tiers.models import AccessGrant, NetworkZone, Resource, Tier

pytestmark = pytest.mark.django_db(transaction=True)

WITHIN = 2.0  # seconds from the committed change to both enforcement points acting on it


def _tls() -> ssl.SSLContext:
    """Trust the test portals' CA (made by the first ``run_portal``)."""
    return ssl.create_default_context(cafile=str(TLS_DIR / "ca.pem"))


@pytest.fixture(autouse=True)
def _clean_cache():
    """Not cleared here: the cache shares Redis with the channel layer, and a FLUSHDB would
    also drop the running portals' group memberships (each hears the bus through one)."""
    yield


@pytest.fixture(scope="module")
def echo() -> Iterator[Any]:
    with run_echo() as server:
        yield server


@pytest.fixture(scope="module")
def portals(django_db_setup, django_db_blocker, guacd, vnc_target,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Process 1 and process 2, on the test database and the test's Redis and guacd."""
    require(connection.vendor == "postgresql", "PostgreSQL (DATABASE_URL) shared by two portal processes")
    require(bool(settings.CONFIG.redis_url), "Redis (REDIS_URL) between two portal processes")
    env = {"GUACD_HOST": guacd.host, "GUACD_PORT": str(guacd.port),
           "PORTAL_RECORDINGS_DIR": str(tmp_path_factory.mktemp("recordings"))}
    with django_db_blocker.unblock(), run_portal(env) as one, run_portal(env) as two:
        yield one, two


@dataclass
class World:
    """What a change acts on: Erin, her session, her desktop and her web app, their tiers."""

    erin: Any
    cookie: str
    zone: NetworkZone
    stream_tier: Tier
    web_tier: Tier
    desktop: Resource
    app: Resource
    one: str
    two: str


@pytest.fixture
def world(portals, echo, vnc_target) -> World:
    zone = NetworkZone.objects.create(name="office", cidrs="127.0.0.0/8", trusted=True)
    stream_tier = Tier.objects.create(name="high", rank=20, access_mode="stream", mfa_read=900, mfa_write=900,
                                      mfa_sensitive=300, recording=False, reauth_interval_seconds=30)
    web_tier = Tier.objects.create(name="low", rank=10, access_mode="proxy", mfa_write=3600, mfa_sensitive=300)
    for tier in (stream_tier, web_tier):
        tier.allowed_zones.add(zone)
    employees = Group.objects.get_or_create(name="employee")[0]
    desktop = Resource.objects.create(slug="ops-desktop", name="Ops desktop", kind="vnc",
                                      upstream=vnc_target.upstream, tier=stream_tier)
    app = Resource.objects.create(slug="echo", name="Echo", kind="web", upstream=echo.url, tier=web_tier)
    for resource in (desktop, app):
        resource.allowed_groups.add(employees)
    vault.store(desktop, TargetSecret(password=vnc_target.password))
    erin = UserFactory(username="erin", role="employee")
    erin.totp = enrol_totp(erin)
    return World(erin, session_cookie_for(erin), zone, stream_tier, web_tier, desktop, app, *portals)


# --- the changes -------------------------------------------------------------------------


def _needs_approval(world: World) -> None:
    for tier in (world.stream_tier, world.web_tier):
        tier.approval_required = True
        tier.save()
    for resource in (world.desktop, world.app):
        AccessGrant.objects.create(user=world.erin, resource=resource, granted_by="adam",
                                   expires_at=timezone.now() + timezone.timedelta(hours=1))


def _lock(world: World) -> None:
    lock_user(world.erin, by="adam", reason="lost laptop")


def _leave_group(world: World) -> None:
    world.erin.groups.remove(Group.objects.get(name="employee"))


def _remove_authenticator(world: World) -> None:
    world.erin.totp.delete()


def _sign_out_through_process_one(world: World) -> None:
    """The real sign-out form on process 1: the session row goes there."""
    with httpx.Client(base_url=world.one, verify=_tls(), timeout=10,
                      cookies={"sessionid": world.cookie}) as browser:
        page = browser.get("/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
        answer = browser.post("/accounts/logout/", data={"csrfmiddlewaretoken": token},
                              headers={"origin": world.one, "referer": f"{world.one}/"})
    assert answer.status_code == 302, answer.text[:300]


def _move_office(world: World) -> None:
    world.zone.cidrs = "10.8.0.0/16"  # Erin's address (127.0.0.1) is no longer in the office
    world.zone.save()


def _ask_for_a_code_on_every_read(world: World) -> None:
    for tier in (world.stream_tier, world.web_tier):
        tier.mfa_read = 1
        tier.save()


def _retag_to_locked_tier(world: World) -> None:
    closed = {"stream": Tier.objects.create(name="closed-stream", rank=40, access_mode="deny"),
              "proxy": Tier.objects.create(name="closed-web", rank=40, access_mode="deny")}
    for resource in (world.desktop, world.app):
        resource.tier = closed[resource.tier.access_mode]
        resource.save()


def _revoke_grants(world: World) -> None:
    for grant in AccessGrant.objects.filter(user=world.erin):
        grant.revoked_at = timezone.now()
        grant.save()


@dataclass(frozen=True)
class Case:
    name: str
    change: Callable[[World], None]
    desktop: str  # what the live desktop does: "ends" or "holds" (input held for a fresh code)
    proxy: frozenset[int]  # what the next request through the proxy may get
    prepare: Callable[[World], None] = lambda world: None


DENIED = frozenset({403, 404})
TO_SIGN_IN = frozenset({302, 303})
CASES = [
    Case("lock", _lock, "ends", TO_SIGN_IN | DENIED),
    Case("group change", _leave_group, "ends", DENIED),
    Case("OTP device removed", _remove_authenticator, "ends", TO_SIGN_IN),
    Case("session deleted", _sign_out_through_process_one, "ends", TO_SIGN_IN),
    Case("zone edited", _move_office, "ends", DENIED),
    Case("tier edited", _ask_for_a_code_on_every_read, "holds", TO_SIGN_IN),
    Case("resource re-tagged", _retag_to_locked_tier, "ends", DENIED),
    Case("grant revoked", _revoke_grants, "ends", DENIED, prepare=_needs_approval),
]


# --- the live desktop and the proxy on process 2 --------------------------------------------


# Whole instructions as the relay sends them (base64 image data holds neither "." nor ",").
SYNC, ENDED, HELD = "4.sync,", "5.error,", "6.portal,7.step_up,"


class LiveDesktop:
    """Erin's browser side of the tunnel: watches the stream for the end or a hold."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.last = ""

    async def until(self, marks: tuple[str, ...], timeout: float) -> str:
        """Read until a message holds one of ``marks`` (returned), or the tunnel closes."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                text = await asyncio.wait_for(self.socket.recv(), max(0.01, deadline - time.monotonic()))
            except ConnectionClosed:
                return "closed"
            except TimeoutError:
                return "nothing in time"
            self.last = text[-200:]
            for mark in marks:
                if mark in text:
                    return mark


async def _open_desktop(world: World) -> LiveDesktop:
    async with httpx.AsyncClient(base_url=world.two, verify=_tls(), timeout=10,
                                 cookies={"sessionid": world.cookie}) as browser:
        page = await browser.get(f"/desktop/{world.desktop.slug}/")
    assert page.status_code == 200, page.text[:300]
    tunnel = re.search(r'data-tunnel="([^"]+)"', page.text)[1]
    ticket = re.search(r'data-ticket="([^"]+)"', page.text)[1]
    url = f"{world.two.replace('https://', 'wss://')}{tunnel}?ticket={ticket}&width=800&height=600&dpi=96"
    socket = await connect(url, ssl=_tls(), proxy=None,
                           subprotocols=["guacamole"], origin=world.two,
                           additional_headers={"cookie": f"sessionid={world.cookie}"})
    desktop = LiveDesktop(socket)
    assert await desktop.until((SYNC,), timeout=15) == SYNC, desktop.last
    return desktop


async def _proxy_turns(proxy: httpx.AsyncClient, deadline: float) -> list[int]:
    """Statuses of the proxy's requests until one is no longer an allow (or time is up)."""
    statuses: list[int] = []
    while time.monotonic() < deadline and (not statuses or statuses[-1] == 200):
        statuses.append((await proxy.get("/apps/echo/x")).status_code)
    return statuses


def _change_in_a_thread(change: Callable[[World], None], world: World) -> None:
    """Make the change from a worker thread, and give its database connection back: each
    case's event loop has new threads, and a connection each of them kept would drain the
    pool over a full run."""
    try:
        change(world)
    finally:
        connection.close()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_change_made_elsewhere_reaches_the_desktop_and_the_proxy_of_process_two_within_two_seconds(
        world, case):
    case.prepare(world)

    async def run() -> tuple[str, list[int], list[int]]:
        desktop = await _open_desktop(world)
        async with httpx.AsyncClient(base_url=world.two, verify=_tls(), timeout=10,
                                     cookies={"sessionid": world.cookie}) as proxy:
            for _ in range(3):  # the first fills process 2's memory, the rest are answered from it
                assert (await proxy.get("/apps/echo/x")).status_code == 200
            if case.name == "tier edited":
                await asyncio.sleep(1.1)  # Erin's code is now older than the new freshness
            await sync_to_async(_change_in_a_thread, thread_sensitive=False)(case.change, world)
            deadline = time.monotonic() + WITHIN
            seen, statuses = await asyncio.gather(desktop.until((ENDED, HELD), WITHIN),
                                                  _proxy_turns(proxy, deadline))
            after = [(await proxy.get("/apps/echo/x")).status_code for _ in range(3)]
        await desktop.socket.close()
        return seen, statuses, after

    seen, statuses, after = asyncio.run(run())
    desktop_did = {ENDED: "ends", "closed": "ends", HELD: "holds"}.get(seen, f"nothing ({seen})")
    assert desktop_did == case.desktop, seen
    assert statuses and statuses[-1] in case.proxy, statuses
    assert set(after) <= case.proxy, after  # and it stays decided on the new state
