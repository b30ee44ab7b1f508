"""WebSockets to proxied apps: admitted like a GET, relayed both ways, re-checked while open.

Real sockets end to end: a websockets client talks WSS to the portal under uvicorn, which
relays to the echo upstream (uvicorn, another process). What the upstream reports is what
crossed the wire.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from urllib.parse import urlsplit

import jwt
import pytest
from django.utils import timezone
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from portal.accounts.lockout import lock_user
from streaming.proxy.models import AccessRecord
from streaming.proxy.records import access_log
from streaming.proxy.websocket import WebSocketProxy
from tests.conftest import https_client, sign_in
from tests.streaming.proxy.conftest import session_cookie_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.fixture
def echo(web_resource, echo_upstream):
    return web_resource("echo", echo_upstream.url)


def _tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _open(portal_url: str, path: str, *, cookie: str | None = None, origin: str | None = None,
          headers: list[tuple[str, str]] | None = None, subprotocols: list[str] | None = None,
          **kwargs):
    extra = list(headers or [])
    if cookie is not None:
        extra.append(("Cookie", cookie))
    return connect(portal_url.replace("https://", "wss://") + path, ssl=_tls(), proxy=None,
                   origin=origin or portal_url, additional_headers=extra, subprotocols=subprotocols,
                   open_timeout=10, max_size=None, **kwargs)


async def _closed(conn, timeout: float = 10) -> tuple[int | None, str | None]:
    """Read until the socket closes; the code and reason the portal sent."""
    async with asyncio.timeout(timeout):
        with pytest.raises(ConnectionClosed):
            while True:
                await conn.recv()
    return conn.close_code, conn.close_reason


def _upstream(browser_for, echo_upstream) -> dict:
    return browser_for().get(f"{echo_upstream.url}hits").json()


_test_started: list = []


@pytest.fixture(autouse=True)
def _mark_test_start():
    """Records are written in batches by a thread: a previous test's socket may land late, so
    a test only looks at records made after it began."""
    _test_started[:] = [timezone.now()]


def _record(slug: str = "echo") -> AccessRecord:
    """The socket's access record (written when the portal's handler returns)."""
    deadline = time.monotonic() + 5
    while True:
        access_log.flush()
        row = (AccessRecord.objects.filter(resource=slug, method="WEBSOCKET", time__gte=_test_started[0])
               .order_by("-id").first())
        if row is not None or time.monotonic() > deadline:
            assert row is not None, "no access record for the socket"
            return row
        time.sleep(0.05)


def _wait_for(predicate, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_an_anonymous_socket_is_refused_and_never_reaches_the_app(portal_url, echo, echo_upstream,
                                                                   browser_for):
    before = _upstream(browser_for, echo_upstream)["count"]

    async def scenario():
        async with _open(portal_url, "/apps/echo/live", subprotocols=["chat.v1"]) as conn:
            return await _closed(conn)

    code, reason = asyncio.run(scenario())
    assert code == 4401
    assert "Sign in" in reason
    assert _upstream(browser_for, echo_upstream)["count"] == before
    row = _record()
    assert (row.decision, row.status, row.path, row.bytes_in, row.bytes_out) == ("login", 4401, "/live", 0, 0)


def test_a_password_only_session_is_refused_until_the_second_factor(portal_url, echo, echo_upstream,
                                                                     browser_for, worker):
    client = https_client()
    sign_in(client, worker, with_mfa=False)
    before = _upstream(browser_for, echo_upstream)["count"]

    async def scenario():
        async with _open(portal_url, "/apps/echo/live",
                         cookie=f"sessionid={client.cookies['sessionid'].value}") as conn:
            return await _closed(conn)

    code, reason = asyncio.run(scenario())
    assert code == 4401 and "second factor" in reason
    assert _upstream(browser_for, echo_upstream)["count"] == before
    assert _record().decision == "mfa"


def test_a_verified_employee_echoes_text_and_binary(portal_url, echo, echo_upstream, browser_for, worker):
    cookie = f"sessionid={session_cookie_for(worker)}"
    blob = bytes(range(256)) * 300

    async def scenario():
        async with _open(portal_url, "/apps/echo/live", cookie=cookie,
                         subprotocols=["chat.v2", "chat.v1"]) as conn:
            assert conn.subprotocol == "chat.v2"  # the app's pick, passed through
            await conn.send("hello, app")
            assert await conn.recv() == "hello, app"
            await conn.send("héllo ✓")
            assert await conn.recv() == "héllo ✓"
            await conn.send(blob)
            echoed = await conn.recv()
            assert isinstance(echoed, bytes) and echoed == blob
            await conn.close(4001, "done here")

    asyncio.run(scenario())
    # The browser's close reaches the app with its code and reason.
    _wait_for(lambda: _upstream(browser_for, echo_upstream)["last_close"] == [4001, "done here"])
    row = _record()
    assert (row.actor, row.decision, row.status) == ("wendy", "allow", 4001)
    text_bytes = len(b"hello, app") + len("héllo ✓".encode())
    assert row.bytes_in == row.bytes_out == text_bytes + len(blob)
    assert row.duration_ms > 0


def test_the_app_sees_a_fresh_assertion_and_no_portal_cookies_or_forged_identity(
        portal_url, echo, echo_upstream, browser_for, worker):
    session = session_cookie_for(worker)
    forged = [("X-Forwarded-User", "admin"), ("X-Portal-Assertion", "eyJhbGciOiJub25lIn0.e30."),
              ("X-Forwarded-For", "6.6.6.6"), ("Remote-User", "admin"), ("X-Auth-Request-Email", "ceo@x")]

    async def scenario():
        async with _open(portal_url, "/apps/echo/live/feed?room=1", headers=forged,
                         cookie=f"sessionid={session}; csrftoken=abc123; app_pref=dark") as conn:
            await conn.send("report")
            return json.loads(await conn.recv())

    seen = asyncio.run(scenario())
    headers: dict[str, list[str]] = {}
    for name, value in seen["headers"]:
        headers.setdefault(name, []).append(value)
    assert seen["raw_path"] == "/live/feed" and seen["query"] == "room=1"
    assert headers["cookie"] == ["app_pref=dark"]  # the portal's sessionid and csrftoken stay here
    for name in ("x-forwarded-user", "remote-user", "x-auth-request-email"):
        assert name not in headers
    host = urlsplit(portal_url).netloc
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["https"]
    assert headers["x-forwarded-host"] == [host]
    assert headers["x-forwarded-prefix"] == ["/apps/echo"]
    assert headers["origin"] == [portal_url]

    [token] = headers["x-portal-assertion"]
    jwks = browser_for().get("/.well-known/jwks.json").json()
    kid = jwt.get_unverified_header(token)["kid"]
    [jwk] = [k for k in jwks["keys"] if k["kid"] == kid]
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["ES256"], audience="echo",
                        issuer=portal_url)
    assert claims["sub"] == str(worker.pk)
    assert "employee" in claims["groups"]


@pytest.mark.parametrize("origin", [
    "https://evil.example",  # refused by Channels' allowed-hosts check already
    "https://127.0.0.1:1",  # same host, another origin: the proxy's same-origin rule
    "http://127.0.0.1:{port}",  # downgraded scheme
    "null",
])
def test_a_socket_from_another_origin_is_refused(portal_url, echo, echo_upstream, browser_for, worker,
                                                 origin):
    cookie = f"sessionid={session_cookie_for(worker)}"
    origin = origin.format(port=urlsplit(portal_url).port)
    before = _upstream(browser_for, echo_upstream)["count"]

    async def scenario():
        with pytest.raises(InvalidStatus) as refused:
            async with _open(portal_url, "/apps/echo/live", cookie=cookie, origin=origin):
                pass
        return refused.value.response.status_code

    assert asyncio.run(scenario()) == 403
    assert _upstream(browser_for, echo_upstream)["count"] == before


def test_a_socket_the_decision_denies_closes_with_its_reason(portal_url, web_resource, echo_upstream,
                                                             browser_for, worker):
    web_resource("vault", echo_upstream.url, groups=("finance",))
    cookie = f"sessionid={session_cookie_for(worker)}"
    before = _upstream(browser_for, echo_upstream)["count"]

    async def scenario():
        async with _open(portal_url, "/apps/vault/live", cookie=cookie) as conn:
            return await _closed(conn)

    code, reason = asyncio.run(scenario())
    assert code == 4403 and reason
    assert _upstream(browser_for, echo_upstream)["count"] == before
    row = _record("vault")
    assert (row.decision, row.status, row.actor) == ("deny", 4403, "wendy")


def test_the_apps_close_reaches_the_browser(portal_url, echo, worker):
    cookie = f"sessionid={session_cookie_for(worker)}"

    async def scenario():
        async with _open(portal_url, "/apps/echo/live", cookie=cookie) as conn:
            await conn.send("close 4000 see you")
            return await _closed(conn)

    assert asyncio.run(scenario()) == (4000, "see you")
    assert _record().status == 4000


def _lock(user) -> None:
    """What an admin's lock does to the row (is_active off), from another thread."""
    user.is_active = False
    user.save(update_fields=["is_active"])


def test_a_locked_users_live_socket_closes_on_the_next_recheck(settings, portal_url, echo, echo_upstream,
                                                                browser_for, worker):
    settings.PORTAL_PROXY_WS_RECHECK_SECONDS = 0.3
    cookie = f"sessionid={session_cookie_for(worker)}"

    async def scenario():
        async with _open(portal_url, "/apps/echo/live", cookie=cookie) as conn:
            await asyncio.sleep(0.8)  # a few re-checks pass while the user may go on
            await conn.send("still here")
            assert await conn.recv() == "still here"
            await asyncio.to_thread(_lock, worker)
            return await _closed(conn, timeout=5)

    code, reason = asyncio.run(scenario())
    assert code == 4403
    assert "locked" in reason.lower()
    _wait_for(lambda: _upstream(browser_for, echo_upstream)["last_close"] == [1008, "access withdrawn"])
    row = _record()
    assert (row.decision, row.status) == ("deny", 4403)


def test_a_lock_is_pushed_to_a_live_socket_without_waiting_for_the_interval(
        settings, portal_url, echo, worker):
    settings.PORTAL_PROXY_WS_RECHECK_SECONDS = 300  # the safety net is far away
    cookie = f"sessionid={session_cookie_for(worker)}"

    async def scenario():
        async with _open(portal_url, "/apps/echo/live", cookie=cookie) as conn:
            await conn.send("ping")
            assert await conn.recv() == "ping"
            await asyncio.to_thread(_lock, worker)
            started = time.monotonic()
            code, reason = await _closed(conn, timeout=5)
            return code, reason, time.monotonic() - started

    code, reason, took = asyncio.run(scenario())
    assert (code, took < 2) == (4403, True), (code, reason, took)
    assert "locked" in reason.lower()


def test_an_admin_lock_ends_the_session_and_the_socket(settings, portal_url, echo, worker):
    settings.PORTAL_PROXY_WS_RECHECK_SECONDS = 0.3
    cookie = f"sessionid={session_cookie_for(worker)}"

    async def scenario():
        async with _open(portal_url, "/apps/echo/live", cookie=cookie) as conn:
            await conn.send("ping")
            assert await conn.recv() == "ping"
            await asyncio.to_thread(lock_user, worker, by="admin", reason="lost laptop")
            return await _closed(conn, timeout=5)

    code, _reason = asyncio.run(scenario())
    # The lock and the end of the web session are pushed together: whichever the re-check
    # sees first closes the socket (4403 locked, or 4401 signed out).
    assert code in (4401, 4403)


def test_a_slow_browser_slows_the_app_and_loses_nothing(portal_url, echo, worker):
    cookie = f"sessionid={session_cookie_for(worker)}"
    count, size = 200, 64 * 1024

    async def scenario():
        async with _open(portal_url, "/apps/echo/live", cookie=cookie, max_queue=2) as conn:
            await conn.send(f"flood {count} {size}")
            await asyncio.sleep(1)  # not reading: everything underneath fills up and waits
            for i in range(count):
                message = await conn.recv()
                assert len(message) == size and message[0] == i % 256 and message[-1] == i % 256

    asyncio.run(scenario())
    assert _record().bytes_out == count * size


def test_a_browser_that_stops_reading_is_closed_with_a_reason(settings, portal_url, echo, echo_upstream,
                                                              browser_for, worker):
    """The browser's side is driven at the ASGI boundary here: on this machine the kernel
    buffers hundreds of MiB on loopback, so a real client that stops reading never makes
    the portal wait. The app's side is the real echo upstream."""
    settings.PORTAL_PROXY_WS_STALL_SECONDS = 0.5
    host = urlsplit(portal_url).netloc
    scope = {
        "type": "websocket", "scheme": "wss", "path": "/apps/echo/live", "raw_path": b"/apps/echo/live",
        "query_string": b"", "client": ("127.0.0.1", 50000), "subprotocols": [],
        "headers": [(b"host", host.encode()), (b"origin", portal_url.encode()),
                    (b"cookie", f"sessionid={session_cookie_for(worker)}".encode())],
    }
    inbox: asyncio.Queue = asyncio.Queue()
    for message in ({"type": "websocket.connect"}, {"type": "websocket.receive", "text": "flood 50 65536"}):
        inbox.put_nowait(message)
    sent: list[dict] = []

    async def receive():
        return await inbox.get()

    async def send(message):
        if message["type"] == "websocket.send" and sum(m["type"] == "websocket.send" for m in sent) == 3:
            await asyncio.Event().wait()  # this browser takes nothing more
        sent.append(message)

    asyncio.run(asyncio.wait_for(WebSocketProxy()(scope, receive, send), 20))
    assert [m["type"] for m in sent] == ["websocket.accept", *["websocket.send"] * 3, "websocket.close"]
    assert [m["bytes"][0] for m in sent[1:4]] == [0, 1, 2]  # in order, none dropped
    assert sent[-1]["code"] == 1013 and "stopped reading" in sent[-1]["reason"]
    _wait_for(lambda: _upstream(browser_for, echo_upstream)["last_close"] == [1001, "browser not reading"])
    row = _record()
    assert (row.decision, row.status, row.bytes_out) == ("allow", 1013, 3 * 65536)
