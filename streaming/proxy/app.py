"""The ASGI side of ``/apps/<slug>/...``: vet, decide, then stream both ways.

Served by a dedicated ASGI path (see docs/decisions/0005) so request bodies stream to the
upstream instead of being spooled whole by Django, and so a request costs one thread hop
for the decision instead of a middleware stack. Order per request: vet the request
(:func:`streaming.proxy.vetting.vet`, shared with WebSockets: 400, redirects, same-origin),
then the admission (:mod:`streaming.proxy.access`: from memory when it can, else the full
way) — only an ``allow`` opens a connection to the upstream. Every request leaves an
access record.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, NamedTuple
from urllib.parse import urlencode

from channels.db import database_sync_to_async
from django.conf import settings

from portal.audit.chain import record
from portal.health import DEPENDENCY_ERRORS
from streaming.proxy import pending
from streaming.proxy.access import Admission, GateRequest, Verdict, admit, admit_from_memory
from streaming.proxy.admission_cache import admission_cache
from streaming.proxy.app_origin import answer_reserved, app_session, start_handoff
from streaming.proxy.conf import proxy_conf
from streaming.proxy.downloads import download_name
from streaming.proxy.exchange import ClientGone, Exchange, page, redirect, reply_json, security_headers
from streaming.proxy.headers import ResponseRewrite, response_headers, upstream_request_headers
from streaming.proxy.paths import ProxyPath
from streaming.proxy.ratelimit import limiter
from streaming.proxy.records import access_log
from streaming.proxy.scope import APP_SLUG, Receive, Scope, Send, cookie, header, wants_json
from streaming.proxy.upstream import Upstream, UpstreamClients, UpstreamError, UpstreamResponse, upstream_for
from streaming.proxy.vetting import Turn, Vetting, arrival_of, vet

__all__ = ["ProxyApp"]

logger = logging.getLogger(__name__)
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_BODYLESS_STATUS = {204, 304}
# Path mode only: the app's pages run in an opaque origin, so nothing they run can read or
# drive the portal's pages on the same host (docs/decisions/0019). No allow-same-origin.
_SANDBOX = (b"content-security-policy",
            b"sandbox allow-forms allow-scripts allow-popups allow-popups-to-escape-sandbox "
            b"allow-modals allow-downloads allow-top-navigation-by-user-activation")
_CROSS_SITE = [{"message": "This form was sent from another web site.",
                "remedy": "Open the app from My apps and try again."}]


class ProxyApp:
    """ASGI application for ``/apps/`` (and every app's own origin)."""

    def __init__(self) -> None:
        self.clients = UpstreamClients()
        self._gate = database_sync_to_async(admit, thread_sensitive=False)
        self._hold = database_sync_to_async(pending.hold_for_step_up, thread_sensitive=False)
        # Full admissions under way, per portal session: see _admit_fully.
        self._admitting: dict[str, asyncio.Future[Admission]] = {}

    async def aclose(self) -> None:
        await admission_cache.stop_listening()
        await self.clients.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = Exchange.begin(scope, receive, send)
        admission_cache.ensure_listening()
        try:
            await self._handle(ex)
        except ClientGone:
            ex.decision = ex.decision if ex.status else "error"
        except DEPENDENCY_ERRORS:
            # Database or Redis away: nothing is allowed, and the page says so (fail closed).
            logger.exception("proxy dependency unavailable", extra={"request_id": ex.request_id})
            if not ex.status:
                await page(ex, 503, "errors/503.html", decision="unavailable",
                           extra_headers=[(b"retry-after", b"30")])
        except Exception:
            logger.exception("proxy failure", extra={"request_id": ex.request_id})
            if not ex.status:
                await page(ex, 500, "errors/500.html", decision="error")
        finally:
            access_log.add(ex.entry())

    # --- the request, step by step ---------------------------------------------------

    async def _handle(self, ex: Exchange) -> None:
        vetting = ex.vetting = vet(arrival_of(ex.scope), proxy_conf())
        ex.client_address, ex.portal_origin = vetting.client_address, vetting.portal_origin
        if vetting.target is not None:
            ex.slug, ex.path = vetting.target.slug, vetting.record_path
        if vetting.turn is not None:
            await self._turn(ex, vetting)
            return
        admission = await self._admit(ex)
        ex.actor, ex.decision = admission.actor, str(admission.verdict)
        if ex.portal_origin and admission.location.startswith("/"):
            # Sign-in and step-up pages live on the portal's origin, not the app's.
            admission = replace(admission, location=ex.portal_origin + admission.location)
        ex.admission = admission
        if admission.verdict is Verdict.ALLOW:
            await self._forward(ex, admission)  # the common case, one call shorter
        else:
            await self._answer(ex, admission)

    async def _turn(self, ex: Exchange, vetting: Vetting) -> None:
        """Answer a request vetting turned away or around (it is never admitted)."""
        match vetting.turn:
            case Turn.BAD_REQUEST | Turn.REPLAY_METHOD:
                await page(ex, vetting.status, "proxy/bad_request.html", decision="bad_request",
                           problem=vetting.problem)
            case Turn.RESERVED:
                await answer_reserved(ex)
            case Turn.CROSS_SITE:
                await page(ex, 403, "proxy/denied.html", decision="deny",
                           heading="Request from another site refused", reasons=_CROSS_SITE)
            case _:  # INSECURE, TO_APP_ORIGIN, ADD_SLASH
                await redirect(ex, vetting.location, vetting.status, "redirect")

    async def _admit(self, ex: Exchange) -> Admission:
        """From memory when the session is known there, else the full admission (a thread hop)."""
        vetted = ex.vetted
        target = vetted.target
        assert target is not None
        app_slug: str | None = ex.scope.get(APP_SLUG)
        found = await app_session(ex.scope, app_slug) if app_slug is not None else None
        session_key = found.session_key if found else (
            None if app_slug is not None else cookie(ex.scope, proxy_conf().session_cookie))
        req = GateRequest(
            slug=target.slug, method=ex.method, path=target.path, portal_path=target.portal_path,
            session_key=session_key, client_address=ex.client_address, request_id=ex.request_id,
            issuer=vetted.issuer, replay_token=vetted.replay_token,
            via_isolation=bool(found and found.isolated))
        admission = await self._admit_from_memory(req)
        if admission is None:
            admission = await self._admit_fully(req)
        return admission

    @staticmethod
    async def _admit_from_memory(req: GateRequest) -> Admission | None:
        admission = admit_from_memory(req)
        bucket = admission.bucket if admission is not None else None
        if bucket is not None and await limiter().atake(*bucket):
            return None  # out of tokens: the full admission answers and audits the 429
        return admission

    async def _admit_fully(self, req: GateRequest) -> Admission:
        """The full admission, one at a time per portal session.

        When a session's snapshot (or the catalog row, or the zone table) leaves memory, every
        connection of that session misses at once. The first runs the full admission; the
        others wait for it and are then decided from the memory it refilled, so a browser's
        burst costs one database round, not one per connection. Whatever memory cannot answer
        still gets its own full admission.
        """
        key = req.session_key
        if not key or req.replay_token is not None:
            return await self._gate(req)
        running = self._admitting.get(key)
        if running is not None:
            await asyncio.wait([running])  # its outcome is its own request's, not ours
            return await self._admit_from_memory(req) or await self._gate(req)
        task = asyncio.ensure_future(self._gate(req))
        self._admitting[key] = task
        try:
            return await task
        finally:
            if self._admitting.get(key) is task:
                del self._admitting[key]

    async def _answer(self, ex: Exchange, admission: Admission) -> None:
        """Turn the admission into an answer: forward, hold, redirect or a page."""
        target = ex.vetted.target
        assert target is not None
        verdict = admission.verdict
        if verdict is Verdict.ALLOW:
            await self._forward(ex, admission)
        elif verdict in (Verdict.LOGIN, Verdict.MFA) and ex.on_app_origin:
            await start_handoff(ex)
        elif verdict in (Verdict.LOGIN, Verdict.MFA) and wants_json(ex.scope):
            await reply_json(ex, 401, {"error": str(verdict), "location": admission.location})
        elif verdict in (Verdict.LOGIN, Verdict.MFA):
            await redirect(ex, admission.location, 302 if ex.method in _SAFE else 303)
        elif verdict is Verdict.STEP_UP:
            await self._step_up(ex, admission)
        elif verdict is Verdict.NOT_FOUND:
            await page(ex, 404, "errors/404.html")
        elif verdict is Verdict.RATE_LIMITED:
            await page(ex, 429, "proxy/rate_limited.html", retry_after=admission.retry_after,
                       resource=admission.resource_name,
                       extra_headers=[(b"retry-after", str(admission.retry_after).encode())])
        elif verdict is Verdict.GONE:
            await page(ex, 410, "proxy/gone.html", resource=admission.resource_name, app_url=target.prefix)
        elif verdict is Verdict.ISOLATE and ex.method in _SAFE and not wants_json(ex.scope):
            # The tier streams this app: straight to its isolated session (issue 13).
            await redirect(ex, f"{ex.portal_origin}/desktop/{target.slug}/", 302)
        else:
            await page(ex, 403, "proxy/denied.html", resource=admission.resource_name,
                       isolate=verdict is Verdict.ISOLATE, slug=target.slug,
                       reasons=[r.as_dict() for r in admission.reasons])

    async def _step_up(self, ex: Exchange, admission: Admission) -> None:
        """A step-up: a page or safe request goes to it; a post is held for after it."""
        if admission.step_up is None:
            await redirect(ex, admission.location, 302)
            return
        target = ex.vetted.target
        assert target is not None
        limit = settings.PORTAL_PROXY_HOLD_MAX_BYTES
        body = await pending.read_to_hold(_body(ex), ex.vetted.length, limit)
        if body is None:
            await page(ex, 413, "proxy/too_large.html", resource=admission.resource_name,
                       limit_kib=limit // 1024,
                       step_up_url="/accounts/step-up/?" + urlencode({"next": target.prefix}))
            return
        held = pending.held_request(ex.method, (target.upstream_path, target.path, target.query),
                                    ex.scope["headers"], body)
        location = await self._hold(admission.step_up, held, target.slug)
        await redirect(ex, ex.portal_origin + location if ex.portal_origin else location, 303)

    async def _forward(self, ex: Exchange, admission: Admission) -> None:
        """Send the admitted request (or the held post it replays) to the catalogued upstream."""
        try:
            upstream = upstream_for(admission.upstream)
        except UpstreamError:
            logger.error("resource %s has an unusable upstream", ex.slug)
            await page(ex, 502, "proxy/unavailable.html", decision="error")
            return
        out = _outgoing(ex, admission)
        try:
            response = await self.clients.for_upstream(upstream).request(
                out.method, upstream.target(out.upstream_path, out.query), out.headers, out.content)
        except TimeoutError:
            await page(ex, 504, "proxy/unavailable.html", decision="allow",
                       resource=admission.resource_name, timeout=True)
            return
        except OSError as exc:  # refused, reset, closed, broken HTTP (UpstreamBroken)
            if _caused_by_client_leaving(exc):
                raise ClientGone from exc
            await page(ex, 502, "proxy/unavailable.html", decision="allow", resource=admission.resource_name)
            return
        try:
            if admission.downloads:
                await self._deliver(ex, admission, response, upstream)
            else:
                await self._relay(ex, response, upstream)
        finally:
            response.release()

    async def _deliver(self, ex: Exchange, admission: Admission, response: UpstreamResponse,
                       upstream: Upstream) -> None:
        """Relay the answer; an isolated browser's downloads follow the tier's file control."""
        name = download_name(response.raw_headers)
        if name is None:
            await self._relay(ex, response, upstream)
        elif admission.downloads == "deny":
            await _audit_download(ex, admission, name, "deny")
            await page(ex, 403, "proxy/denied.html", decision="deny", resource=admission.resource_name,
                       heading="Downloads are not allowed here",
                       reasons=[{"message": f"The file {name!r} stays in the isolated session: "
                                            "this tier allows no file transfer.",
                                 "remedy": "Ask an admin if you need the file."}])
        else:
            tap = hashlib.sha256()
            await self._relay(ex, response, upstream, tap=tap)
            await _audit_download(ex, admission, name, "allow", size=ex.bytes_out, sha256=tap.hexdigest())

    async def _relay(self, ex: Exchange, response: UpstreamResponse, upstream: Upstream,
                     tap: Any = None) -> None:
        """The upstream's answer to the browser, piece by piece, headers rewritten."""
        conf = proxy_conf()
        rewrite = ResponseRewrite(upstream.origin, upstream.base_path, _public_prefix(ex),
                                  frozenset(conf.portal_cookies))
        headers = response_headers(response.raw_headers, rewrite)
        headers += security_headers(ex)
        if not ex.on_app_origin:
            headers.append(_SANDBOX)
        ex.status = response.status
        await ex.send({"type": "http.response.start", "status": response.status, "headers": headers})
        if ex.method == "HEAD" or response.status in _BODYLESS_STATUS:
            await ex.send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        gone = asyncio.Event()
        watcher: asyncio.Task[None] | None = None
        length = response.content_length  # None when the upstream streams it chunked
        try:
            async for chunk in response.iter_chunks(conf.chunk_bytes):
                if gone.is_set():
                    raise ClientGone
                ex.bytes_out += len(chunk)
                if tap is not None:
                    tap.update(chunk)
                if length is not None and ex.bytes_out >= length:
                    # The whole announced body: end with this piece (one send less per response).
                    await ex.send({"type": "http.response.body", "body": chunk, "more_body": False})
                    return
                await ex.send({"type": "http.response.body", "body": chunk, "more_body": True})
                if watcher is None and ex.bytes_out > conf.chunk_bytes:
                    # A long download: notice the browser leaving instead of reading on.
                    watcher = asyncio.create_task(_watch_disconnect(ex.receive, gone))
            await ex.send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher


class _Outgoing(NamedTuple):
    """What goes to the upstream."""

    method: str
    upstream_path: str
    query: str
    headers: list[tuple[str, str]]
    content: bytes | AsyncIterator[bytes] | None


def _outgoing(ex: Exchange, admission: Admission) -> _Outgoing:
    """The request itself, or the held post a replay releases, as it goes to the upstream."""
    vetted, held = ex.vetted, admission.held
    target = vetted.target
    assert target is not None
    raw_headers = ([(k.encode("latin-1"), v.encode("latin-1")) for k, v in held.headers]
                   if held else ex.scope["headers"])
    headers = upstream_request_headers(
        raw_headers, assertion=admission.assertion, client_address=ex.client_address,
        proto=vetted.scheme, host=vetted.host, prefix=_public_prefix(ex).rstrip("/"),
        portal_cookies=proxy_conf().portal_cookies)
    headers.append(("x-request-id", ex.request_id))
    if held is not None:
        ex.bytes_in = len(held.body)
        headers = [(k, v) for k, v in headers if k != "content-length"]
        return _Outgoing(held.method, held.upstream_path, held.query, headers, held.body)
    bodyless = vetted.length is None and header(ex.scope, b"transfer-encoding") is None
    return _Outgoing(ex.method, target.upstream_path, target.query, headers, None if bodyless else _body(ex))


async def _audit_download(ex: Exchange, admission: Admission, name: str, outcome: str,
                          **detail: Any) -> None:
    await database_sync_to_async(record, thread_sensitive=False)(
        "isolation.download", outcome=outcome, actor=admission.actor, resource=ex.slug,
        client_address=ex.client_address, request_id=ex.request_id,
        detail={"name": name, "path": ex.path[:500], **detail})


def _public_prefix(ex: Exchange) -> str:
    """Where the app's paths start as the browser sees them: ``/`` on its own origin."""
    target: ProxyPath | None = ex.vetted.target
    assert target is not None
    return "/" if ex.on_app_origin else target.prefix


async def _body(ex: Exchange) -> AsyncIterator[bytes]:
    """The request body as it arrives (each chunk is forwarded before the next is read)."""
    while True:
        message = await ex.receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            ex.bytes_in += len(chunk)
            yield chunk
        if not message.get("more_body", False):
            return


def _caused_by_client_leaving(exc: BaseException) -> bool:
    """Whether an upstream error is really the browser going away mid-upload."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, ClientGone):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return
