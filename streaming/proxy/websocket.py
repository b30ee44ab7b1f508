"""WebSocket passthrough for ``/apps/<slug>/...``: admitted like an HTTP GET, then relayed.

A raw ASGI handler behind Channels' router (see docs/decisions/0005). Order per socket:
vet the target, headers, host and scheme (handshake refused), then same-origin only (a
page on another origin cannot ride the portal session: cross-site WebSocket hijacking) —
the very :func:`streaming.proxy.vetting.vet` HTTP uses — then
:func:`streaming.proxy.access.admit` for a GET of the same path, again as HTTP does.
Anything but ``allow`` is accepted and closed at once with a code the page can read
(4401 sign in / second factor / step-up, 4403 denied, 4404 unknown app, 4429 rate
limited) and nothing reaches the app. ``allow`` opens a WebSocket to the catalogued
upstream only, with the portal's identity headers (a fresh ``X-Portal-Assertion``), the
client's identity headers and the portal's cookies stripped, and the subprotocol the app
picked from the browser's offer.

The relay moves one message at a time each way: a message is read from one side only
after the previous one was handed to the other, and every buffer underneath is bounded
(uvicorn pauses reading until the app takes a message; the upstream connection holds at
most ``PORTAL_PROXY_WS_QUEUE`` frames and waits for its write buffer to drain). A slow side
therefore slows the other; one that takes nothing for ``PORTAL_PROXY_WS_STALL_SECONDS``
ends the socket with 1013 and a reason. Nothing is ever dropped. The socket is admitted
again (fresh session, user and decision) at once when a change touches its user, session or
the catalog (pushed: streaming/proxy/signals.py), and every
``PORTAL_PROXY_WS_RECHECK_SECONDS`` as the safety net; when the answer is no longer
``allow`` both sides are closed with the reason.
Each socket leaves one access record at its end (method ``WEBSOCKET``, status = the close
code the browser received, or the HTTP status of a refused handshake).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from django.conf import settings
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from portal.health import DEPENDENCY_ERRORS
from streaming.proxy.access import Admission, GateRequest, Verdict, admit
from streaming.proxy.admission_cache import admission_cache
from streaming.proxy.app_origin import app_session
from streaming.proxy.conf import proxy_conf
from streaming.proxy.headers import upstream_request_headers
from streaming.proxy.records import AccessEntry, access_log
from streaming.proxy.scope import APP_SLUG, Receive, Scope, Send, cookie
from streaming.proxy.upstream import Upstream, UpstreamError, upstream_tls
from streaming.proxy.vetting import Turn, Vetting, arrival_of, vet

__all__ = ["CLOSE_FORBIDDEN", "CLOSE_NOT_FOUND", "CLOSE_RATE_LIMITED", "CLOSE_UNAUTHENTICATED",
           "WebSocketProxy", "refusal"]

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401  # sign in, confirm the second factor, or step up
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_RATE_LIMITED = 4429
_GOING_AWAY, _POLICY, _SERVER_ERROR, _RESTART, _TRY_LATER, _BAD_GATEWAY = 1001, 1008, 1011, 1012, 1013, 1014
_UNSENDABLE = frozenset({1004, 1005, 1006, 1015})  # reserved: never on the wire
# The handshake headers the upstream connection makes for itself.
_HANDSHAKE = frozenset({"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
                        "sec-websocket-protocol", "sec-websocket-accept"})


def _setting(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


class _NoRedirects(ws_connect):
    """The catalogued upstream and nothing else: a redirect is a failed handshake."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


@dataclass(frozen=True)
class _End:
    """How a relay ends: the close each side gets (None: that side is already gone)."""

    browser: tuple[int, str] | None
    app: tuple[int, str] | None
    decision: str | None = None  # set when a re-check ended it


@dataclass(slots=True)
class _Socket:
    """One proxied socket: its ASGI side, its admission, and what its access record will say."""

    scope: Scope
    receive: Receive
    send: Send
    path: str
    client_address: str
    started: float = field(default_factory=time.perf_counter)
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    slug: str = ""
    actor: str = ""
    status: int = 0
    decision: str = "error"
    bytes_in: int = 0  # browser to app, message payload bytes
    bytes_out: int = 0  # app to browser
    handshake_done: bool = False
    req: GateRequest | None = None  # what it was admitted on (and is re-checked on)
    admission: Admission | None = None

    @classmethod
    def begin(cls, scope: Scope, receive: Receive, send: Send) -> _Socket:
        return cls(scope, receive, send, scope.get("raw_path", b"").decode("latin-1") or scope["path"],
                   (scope.get("client") or ("", 0))[0])

    def entry(self) -> AccessEntry:
        return AccessEntry(
            actor=self.actor, resource=self.slug, method="WEBSOCKET", path=self.path[:2000],
            status=self.status, decision=self.decision, bytes_in=self.bytes_in,
            bytes_out=self.bytes_out, duration_ms=(time.perf_counter() - self.started) * 1000,
            client_address=self.client_address, request_id=self.request_id)


# How a handshake vetting turned away is refused (HTTP status, record's decision).
_TURNED = {Turn.NOT_FOUND: (404, "not_found"), Turn.INSECURE: (403, "bad_request"),
           Turn.CROSS_SITE: (403, "deny")}


def _size(data: str | bytes) -> int:
    return len(data) if isinstance(data, bytes) or data.isascii() else len(data.encode())


def _reason(text: str) -> str:
    """A close reason fits in 123 bytes of UTF-8."""
    raw = text.encode()
    return text if len(raw) <= 123 else raw[:120].decode(errors="ignore") + "..."


def _sendable(code: int | None, fallback: int) -> int:
    if code is None or code in _UNSENDABLE or not (1000 <= code <= 4999) or 1016 <= code < 3000:
        return fallback
    return code


def refusal(admission: Admission) -> tuple[int, str]:
    """The close code and reason for an admission that is not ``allow`` (no policy here:
    the verdict and its reasons come from :func:`admit`)."""
    first = admission.reasons[0].message if admission.reasons else ""
    match admission.verdict:
        case Verdict.LOGIN:
            return CLOSE_UNAUTHENTICATED, "Sign in to the portal, then open the app again."
        case Verdict.MFA:
            return CLOSE_UNAUTHENTICATED, "Confirm your second factor, then open the app again."
        case Verdict.STEP_UP:
            return CLOSE_UNAUTHENTICATED, _reason(first or "This app needs a fresh code: reload the page.")
        case Verdict.NOT_FOUND:
            return CLOSE_NOT_FOUND, "There is no such app."
        case Verdict.RATE_LIMITED:
            return CLOSE_RATE_LIMITED, f"Too many requests: try again in {admission.retry_after} s."
        case _:
            return CLOSE_FORBIDDEN, _reason(first or "Access denied.")


class WebSocketProxy:
    """ASGI application for WebSockets under ``/apps/``."""

    def __init__(self) -> None:
        self._gate = database_sync_to_async(admit, thread_sensitive=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ws = _Socket.begin(scope, receive, send)
        try:
            message = await receive()
            if message["type"] != "websocket.connect":
                return
            await self._handle(ws)
        except DEPENDENCY_ERRORS:
            # Database or Redis away: nothing is allowed (fail closed).
            logger.exception("proxy dependency unavailable", extra={"request_id": ws.request_id})
            await self._refuse(ws, _SERVER_ERROR, "The portal is unavailable; try again soon.",
                               decision="unavailable")
        except Exception:
            logger.exception("websocket proxy failure", extra={"request_id": ws.request_id})
            await self._refuse(ws, _SERVER_ERROR, "The portal failed; try again.", decision="error")
        finally:
            access_log.add(ws.entry())

    # --- the handshake, step by step --------------------------------------------------

    async def _handle(self, ws: _Socket) -> None:
        vetting = vet(arrival_of(ws.scope, websocket=True), proxy_conf())
        ws.client_address = vetting.client_address
        if vetting.target is not None:
            ws.slug, ws.path = vetting.target.slug, vetting.record_path
        if vetting.turn is not None:
            await self._reject(ws, *_TURNED.get(vetting.turn, (400, "bad_request")))
            return
        admission = await self._admit(ws, vetting)
        ws.actor, ws.decision = admission.actor, str(admission.verdict)
        if admission.verdict is not Verdict.ALLOW:
            await self._refuse(ws, *refusal(admission))
            return
        conn = await self._connect(ws, vetting, admission)
        if conn is None:
            return
        end: _End | None = None
        try:
            await ws.send({"type": "websocket.accept", "subprotocol": conn.subprotocol})
            ws.handshake_done = True
            ws.status = 101
            end = await self._relay(ws, conn)
            if end.decision is not None:
                ws.decision = end.decision
        finally:
            # Both sides learn why at once (app None: it closed first, close() only tidies up).
            app_close = (_GOING_AWAY, "portal closed the connection") if end is None else end.app
            closes = [_close_app(conn, *(app_close or (1000, "")))]
            if end is not None and end.browser is not None:
                closes.append(self._close_browser(ws, *end.browser))
            await asyncio.gather(*closes)

    async def _admit(self, ws: _Socket, vetting: Vetting) -> Admission:
        """The same admission as an HTTP GET of this path (always the full way: a socket is
        opened once and then lives long)."""
        target = vetting.target
        assert target is not None
        app_slug: str | None = ws.scope.get(APP_SLUG)
        if app_slug is not None:
            found = await app_session(ws.scope, app_slug)
            session_key, via_isolation = (found.session_key, found.isolated) if found else (None, False)
        else:
            session_key, via_isolation = cookie(ws.scope, proxy_conf().session_cookie), False
        ws.req = GateRequest(
            slug=target.slug, method="GET", path=target.path, portal_path=target.portal_path,
            session_key=session_key, client_address=ws.client_address,
            request_id=ws.request_id, issuer=vetting.issuer, via_isolation=via_isolation)
        ws.admission = await self._gate(ws.req)
        return ws.admission

    async def _connect(self, ws: _Socket, vetting: Vetting, admission: Admission) -> ClientConnection | None:
        """A WebSocket to the catalogued upstream, or None (the browser was told why)."""
        target = vetting.target
        assert target is not None
        try:
            upstream = Upstream.parse(admission.upstream)
        except UpstreamError:
            logger.error("resource %s has an unusable upstream", target.slug)
            await self._refuse(ws, _BAD_GATEWAY, "The app is not set up correctly.")
            return None
        headers = upstream_request_headers(
            [(k, v) for k, v in ws.scope["headers"] if k.lower().decode("latin-1") not in _HANDSHAKE],
            assertion=admission.assertion, client_address=ws.client_address, proto=vetting.scheme,
            host=vetting.host, prefix="" if ws.scope.get(APP_SLUG) is not None else target.prefix.rstrip("/"),
            portal_cookies=proxy_conf().portal_cookies)
        headers.append(("x-request-id", ws.request_id))
        try:
            return await _NoRedirects(
                _ws_url(upstream, target.upstream_path, target.query), additional_headers=headers,
                user_agent_header=None, proxy=None, subprotocols=ws.scope.get("subprotocols") or None,
                ssl=upstream_tls() if upstream.scheme == "https" else None,
                open_timeout=settings.PORTAL_PROXY_CONNECT_TIMEOUT,
                max_size=int(_setting("PORTAL_PROXY_WS_MAX_MESSAGE_BYTES", 4 * 1024 * 1024)),
                max_queue=int(_setting("PORTAL_PROXY_WS_QUEUE", 8)),
                write_limit=settings.PORTAL_PROXY_CHUNK_BYTES, close_timeout=2)
        except InvalidStatus as exc:
            status = exc.response.status_code
            await self._refuse(ws, _BAD_GATEWAY, f"The app refused the connection (HTTP {status}).")
        except (OSError, TimeoutError, InvalidHandshake):
            await self._refuse(ws, _BAD_GATEWAY, "The app is not answering.")
        return None

    # --- the relay --------------------------------------------------------------------

    async def _relay(self, ws: _Socket, conn: ClientConnection) -> _End:
        stall = _setting("PORTAL_PROXY_WS_STALL_SECONDS", settings.PORTAL_PROXY_READ_TIMEOUT)
        tasks = [asyncio.create_task(_browser_to_app(ws, conn, stall)),
                 asyncio.create_task(_app_to_browser(conn, ws, stall)),
                 asyncio.create_task(self._recheck(ws))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        first = next(t for t in tasks if t in done)
        return first.result()

    async def _recheck(self, ws: _Socket) -> _End:
        """Admit the socket again at once when a change touches its user or session (pushed,
        see streaming/proxy/signals.py), and every interval as the safety net; end it when
        the answer changes."""
        assert ws.req is not None and ws.admission is not None
        check = dataclasses.replace(ws.req, live_recheck=True)
        user_id, upstream = ws.admission.user_id, ws.admission.upstream
        changed = admission_cache.watch(user_id if user_id is not None else -1, ws.req.session_key)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), _setting("PORTAL_PROXY_WS_RECHECK_SECONDS", 30.0))
                changed.clear()
                end = await self._decide_again(check, upstream)
                if end is not None:
                    return end
        finally:
            admission_cache.unwatch(changed)

    async def _decide_again(self, check: GateRequest, upstream: str) -> _End | None:
        """One re-check of a live socket: None while it may go on, else how it ends."""
        try:
            admission = await self._gate(check)
        except DEPENDENCY_ERRORS:
            logger.exception("re-check of a live socket failed", extra={"request_id": check.request_id})
            return _End((_SERVER_ERROR, "The portal cannot check your access; reconnect soon."),
                        (_GOING_AWAY, "portal closed the connection"), "unavailable")
        if admission.verdict is not Verdict.ALLOW:
            return _End(refusal(admission), (_POLICY, "access withdrawn"), str(admission.verdict))
        if admission.upstream != upstream:
            return _End((_RESTART, "The app moved: reconnect."), (_GOING_AWAY, "app moved"))
        return None

    # --- closing ----------------------------------------------------------------------

    async def _reject(self, ws: _Socket, status: int, decision: str) -> None:
        """Refuse the handshake itself (the server answers 403): nothing to explain to a page."""
        ws.status, ws.decision = status, decision
        await ws.send({"type": "websocket.close", "code": CLOSE_FORBIDDEN})

    async def _refuse(self, ws: _Socket, code: int, reason: str, decision: str | None = None) -> None:
        """Accept, then close at once with a code and reason the page can read.

        The first subprotocol offered is echoed: a browser fails a handshake that offered
        subprotocols and got none back, and would then see 1006 instead of the reason.
        """
        if decision:
            ws.decision = decision
        if not ws.handshake_done:
            offered = ws.scope.get("subprotocols") or []
            try:
                await ws.send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
            except Exception:
                return  # the browser is gone already
            ws.handshake_done = True
        await self._close_browser(ws, code, reason)

    async def _close_browser(self, ws: _Socket, code: int, reason: str) -> None:
        ws.status = code
        # A browser that stopped reading may never make room for the close frame.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await ws.send({"type": "websocket.close", "code": code, "reason": _reason(reason)})


def _ws_url(upstream: Upstream, upstream_path: str, query: str) -> str:
    """The catalogued upstream, as ws:// or wss://, plus the vetted path and query."""
    scheme = "wss" if upstream.scheme == "https" else "ws"
    host = f"[{upstream.host}]" if ":" in upstream.host else upstream.host
    return f"{scheme}://{host}:{upstream.port}{upstream.target(upstream_path, query)}"


async def _browser_to_app(ws: _Socket, conn: ClientConnection, stall: float) -> _End:
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            ws.status = message.get("code") or 1005
            code = _sendable(message.get("code"), _GOING_AWAY)
            return _End(None, (code, _reason(message.get("reason") or "")))
        data = message.get("bytes")
        if data is None:
            data = message.get("text")
        if data is None:
            continue
        try:
            async with asyncio.timeout(stall):
                await conn.send(data)  # waits while the app reads slowly: back-pressure
        except TimeoutError:
            return _End((_TRY_LATER, "The app stopped reading; the connection was closed."),
                        (_TRY_LATER, "not reading"))
        except ConnectionClosed:
            return _app_closed(conn)
        ws.bytes_in += _size(data)


async def _app_to_browser(conn: ClientConnection, ws: _Socket, stall: float) -> _End:
    while True:
        try:
            data = await conn.recv()
        except ConnectionClosed:
            return _app_closed(conn)
        key = "bytes" if isinstance(data, bytes) else "text"
        try:
            async with asyncio.timeout(stall):
                await ws.send({"type": "websocket.send", key: data})  # waits for a slow browser
        except TimeoutError:
            return _End((_TRY_LATER, "Your browser stopped reading; the connection was closed."),
                        (_GOING_AWAY, "browser not reading"))
        except Exception:  # the browser went away (uvicorn raises its own ClientDisconnected)
            return _End(None, (_GOING_AWAY, "browser gone"))
        ws.bytes_out += _size(data)


async def _close_app(conn: ClientConnection, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        await conn.close(code, reason)


def _app_closed(conn: ClientConnection) -> _End:
    """The app closed (or dropped) its side: the browser gets the app's code and reason."""
    code = conn.close_code
    if code is None or code == 1006:
        return _End((_BAD_GATEWAY, "The app closed the connection unexpectedly."), None)
    return _End((_sendable(code, 1000), _reason(conn.close_reason or "")), None)
