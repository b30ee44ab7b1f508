"""The ASGI side of ``/apps/<slug>/...``: vet, decide, then stream both ways.

Served by a dedicated ASGI path (see docs/decisions/0005) so request bodies stream to the
upstream instead of being spooled whole by Django, and so a request costs one thread hop
for the decision instead of a middleware stack. Order per request: vet the target and the
headers (400), HTTPS and host checks, then :func:`streaming.proxy.access.admit` — only an
``allow`` opens a connection to the upstream. Every request leaves an access record.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from channels.db import database_sync_to_async
from django.conf import settings
from django.dispatch import receiver
from django.http.cookie import parse_cookie
from django.http.request import split_domain_port, validate_host
from django.template.loader import render_to_string
from django.test.signals import setting_changed

from portal.audit.chain import record
from portal.health import DEPENDENCY_ERRORS
from portal.network import is_trusted, resolve_client_address
from streaming.proxy import handoff, pending
from streaming.proxy.access import Admission, GateRequest, Verdict, admit, admit_from_memory, hold_for_step_up
from streaming.proxy.admission_cache import admission_cache
from streaming.proxy.downloads import download_name
from streaming.proxy.headers import (
    HOP_BY_HOP,
    HeaderError,
    ResponseRewrite,
    check_request_headers,
    response_headers,
    same_origin,
    upstream_request_headers,
)
from streaming.proxy.origins import RESERVED_PREFIX, app_origin, app_slug_for_host, split_host
from streaming.proxy.paths import PathError, ProxyPath, parse_target
from streaming.proxy.ratelimit import limiter
from streaming.proxy.records import AccessEntry, access_log
from streaming.proxy.upstream import (
    Upstream,
    UpstreamClients,
    UpstreamError,
    UpstreamResponse,
    upstream_for,
)

__all__ = ["APP_SLUG", "ProxyApp", "app_slug_of"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

logger = logging.getLogger(__name__)
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_BODYLESS_STATUS = {204, 304}
_HEADER_TABLE = "portal.headers"  # scope key of the request's header table (see _header)
APP_SLUG = "portal.app_slug"  # scope key: the app whose own origin the request came to
# Path mode only: the app's pages run in an opaque origin, so nothing they run can read or
# drive the portal's pages on the same host (docs/decisions/0019). No allow-same-origin.
_SANDBOX = (b"content-security-policy",
            b"sandbox allow-forms allow-scripts allow-popups allow-popups-to-escape-sandbox "
            b"allow-modals allow-downloads allow-top-navigation-by-user-activation")


class _ClientGone(Exception):
    """The browser went away mid-request."""


class _Exchange:
    """Book-keeping for one request: what the access record will say."""

    def __init__(self, scope: Scope) -> None:
        self.started = time.perf_counter()
        self.request_id = os.urandom(16).hex()  # as unique as a uuid4, without building one
        self.method = scope["method"]
        self.slug = ""
        self.path = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
        self.actor = ""
        self.client_address = (scope.get("client") or ("", 0))[0]
        self.status = 0
        self.decision = "error"
        self.bytes_in = 0
        self.bytes_out = 0
        self.portal_origin = ""  # on an app's origin: where the portal's own pages are

    def entry(self) -> AccessEntry:
        return AccessEntry(
            actor=self.actor, resource=self.slug, method=self.method, path=self.path[:2000],
            status=self.status, decision=self.decision, bytes_in=self.bytes_in,
            bytes_out=self.bytes_out, duration_ms=(time.perf_counter() - self.started) * 1000,
            client_address=self.client_address, request_id=self.request_id)


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), from a table built once per request."""
    table = scope.get(_HEADER_TABLE)
    if table is None:
        table = {}
        for key, value in scope["headers"]:
            table.setdefault(key.lower(), value)
        scope[_HEADER_TABLE] = table
    value = table.get(name)
    return None if value is None else value.decode("latin-1")


@dataclass(frozen=True, slots=True)
class _Conf:
    """The settings a proxied request reads, looked up once (Django's settings object costs a
    microsecond per read, twenty times a request); rebuilt whenever a setting changes."""

    trusted_proxies: Any
    allowed_hosts: tuple[str, ...]
    ssl_redirect: bool
    issuer: str
    session_cookie: str
    portal_cookies: tuple[str, ...]
    chunk_bytes: int
    security_headers: tuple[tuple[bytes, bytes], ...]
    apps_domain: str  # "" in path mode
    portal_url: str | None
    portal_host: str  # the first allowed host: the portal's name when PORTAL_URL is unset
    valid_hosts: dict[str, bool]  # memo of host_allowed per Host header
    trusted_peers: dict[str, bool]  # memo of is_trusted per peer address

    @classmethod
    def load(cls) -> _Conf:
        hsts: list[tuple[bytes, bytes]] = []
        if settings.SECURE_HSTS_SECONDS:
            value = f"max-age={settings.SECURE_HSTS_SECONDS}"
            if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
                value += "; includeSubDomains"
            hsts.append((b"strict-transport-security", value.encode()))
        return cls(
            trusted_proxies=settings.PORTAL_TRUSTED_PROXIES,
            allowed_hosts=tuple(settings.ALLOWED_HOSTS)
            + (("localhost", "127.0.0.1", "[::1]") if settings.DEBUG else ()),
            ssl_redirect=bool(settings.SECURE_SSL_REDIRECT),
            issuer=settings.PORTAL_ASSERTION_ISSUER or "",
            session_cookie=settings.SESSION_COOKIE_NAME,
            # Every cookie of the portal's own: never forwarded to an app, never set by one.
            portal_cookies=(settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME,
                            settings.LANGUAGE_COOKIE_NAME, "messages", handoff.APP_COOKIE,
                            handoff.STATE_COOKIE),
            chunk_bytes=int(settings.PORTAL_PROXY_CHUNK_BYTES),
            security_headers=tuple(hsts),
            apps_domain=settings.PORTAL_APPS_DOMAIN or "",
            portal_url=settings.PORTAL_URL,
            portal_host=next((h for h in settings.ALLOWED_HOSTS if h and h[0] not in ".*"), "localhost"),
            valid_hosts={},
            trusted_peers={},
        )

    def portal_origin(self, scheme: str, host: str) -> str:
        """Where the portal itself answers, seen from a request that came to ``host``."""
        if self.portal_url:
            return self.portal_url
        _domain, port = split_host(host)
        suffix = f":{port}" if port and port != {"http": "80", "https": "443"}.get(scheme) else ""
        return f"{scheme}://{self.portal_host}{suffix}"

    def peer_trusted(self, peer: str) -> bool:
        """Whether ``peer`` is one of the trusted proxies (remembered per address)."""
        return _remembered(self.trusted_peers, peer,
                           lambda: is_trusted(peer, self.trusted_proxies))

    def host_allowed(self, host: str) -> bool:
        """Whether the Host header names this portal (Django's own check, remembered)."""
        def check() -> bool:
            domain, _port = split_domain_port(host)
            return bool(domain) and validate_host(domain, list(self.allowed_hosts))
        return _remembered(self.valid_hosts, host, check)


_MEMO_LIMIT = 1024  # answers kept per memo: a stream of odd Host headers or peers is not kept


def _remembered(memo: dict[str, bool], key: str, compute: Callable[[], bool]) -> bool:
    known = memo.get(key)
    if known is None:
        known = compute()
        if len(memo) < _MEMO_LIMIT:
            memo[key] = known
    return known


_conf_cache: _Conf | None = None


def _conf() -> _Conf:
    global _conf_cache
    if _conf_cache is None:
        _conf_cache = _Conf.load()
    return _conf_cache


@receiver(setting_changed)
def _settings_changed(**_kwargs: Any) -> None:
    global _conf_cache
    _conf_cache = None


class ProxyApp:
    """ASGI application for ``/apps/``."""

    def __init__(self) -> None:
        self.clients = UpstreamClients()
        self._gate = database_sync_to_async(admit, thread_sensitive=False)
        self._hold = database_sync_to_async(hold_for_step_up, thread_sensitive=False)

    async def aclose(self) -> None:
        await admission_cache.stop_listening()
        await self.clients.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = _Exchange(scope)
        admission_cache.ensure_listening()
        try:
            await self._handle(scope, receive, send, ex)
        except _ClientGone:
            ex.decision = ex.decision if ex.status else "error"
        except DEPENDENCY_ERRORS:
            # Database or Redis away: nothing is allowed, and the page says so (fail closed).
            logger.exception("proxy dependency unavailable", extra={"request_id": ex.request_id})
            if not ex.status:
                await self._page(send, ex, 503, "errors/503.html", decision="unavailable",
                                 extra_headers=[(b"retry-after", b"30")])
        except Exception:
            logger.exception("proxy failure", extra={"request_id": ex.request_id})
            if not ex.status:
                await self._page(send, ex, 500, "errors/500.html", decision="error")
        finally:
            access_log.add(ex.entry())

    # --- the request, step by step ---------------------------------------------------

    async def _handle(self, scope: Scope, receive: Receive, send: Send, ex: _Exchange) -> None:
        raw_path = scope.get("raw_path", b"").decode("latin-1") or quote(scope["path"])
        query = scope.get("query_string", b"").decode("latin-1")
        app_slug: str | None = scope.get(APP_SLUG)
        try:
            length = check_request_headers(scope["headers"])
            if app_slug is not None and not raw_path.startswith("/"):
                raise PathError("the request target is not a path")
            # On an app's own origin the whole path is the app's: vetted exactly as under /apps/.
            target = parse_target(f"/apps/{app_slug}{raw_path}" if app_slug else raw_path, query)
            if target is None:
                raise PathError("not under /apps/")
        except (HeaderError, PathError) as exc:
            await self._page(send, ex, 400, "proxy/bad_request.html", decision="bad_request",
                             problem=str(exc))
            return
        ex.slug, ex.path = target.slug, (target.upstream_path or "/") + (f"?{query}" if query else "")

        conf = _conf()
        host = _header(scope, b"host") or ""
        peer = ex.client_address
        trusted = conf.trusted_proxies
        scheme = scope.get("scheme", "http")
        if conf.peer_trusted(peer):
            ex.client_address = resolve_client_address(peer, _header(scope, b"x-forwarded-for"), trusted)
            if (_header(scope, b"x-forwarded-proto") or "").strip().lower() == "https":
                scheme = "https"
        if app_slug is not None:
            ex.portal_origin = conf.portal_origin(scheme, host)
        if app_slug is None and not conf.host_allowed(host):
            await self._page(send, ex, 400, "proxy/bad_request.html", decision="bad_request",
                             problem="unknown host")
            return
        if scheme != "https" and conf.ssl_redirect:
            where = (raw_path + (f"?{query}" if query else "")) if app_slug else target.portal_path
            await self._redirect(send, ex, f"https://{host}{where}", 301, "redirect")
            return
        if app_slug is None and conf.apps_domain:
            # Host mode: the portal's origin never serves an app's bytes; old links move on.
            origin = app_origin(target.slug, conf.apps_domain, scheme=scheme, port=split_host(host)[1])
            where = (target.upstream_path or "/") + (f"?{query}" if query else "")
            await self._redirect(send, ex, origin + where, 302 if ex.method in _SAFE else 308, "redirect")
            return
        if not target.upstream_path:
            await self._redirect(send, ex, target.prefix + (f"?{query}" if query else ""), 301, "redirect")
            return
        if app_slug is not None and target.upstream_path.startswith(RESERVED_PREFIX) \
                and not target.upstream_path.startswith(pending.REPLAY_PREFIX):
            await self._reserved(scope, send, ex, target, query, scheme=scheme, host=host)
            return
        if ex.method not in _SAFE and not same_origin(_header(scope, b"origin"),
                                                      _header(scope, b"sec-fetch-site"),
                                                      scheme=scheme, host=host):
            await self._page(send, ex, 403, "proxy/denied.html", decision="deny",
                             heading="Request from another site refused",
                             reasons=[{"message": "This form was sent from another web site.",
                                       "remedy": "Open the app from My apps and try again."}])
            return

        replay_token = None
        if target.upstream_path.startswith(pending.REPLAY_PREFIX):
            if ex.method != "GET":
                await self._page(send, ex, 405, "proxy/bad_request.html", decision="bad_request",
                                 problem="replay links are opened with GET")
                return
            replay_token = target.upstream_path[len(pending.REPLAY_PREFIX):]

        app_session = await self._app_session(scope, app_slug) if app_slug is not None else None
        session_key = app_session.session_key if app_session else (
            None if app_slug is not None else _session_key(scope))
        req = GateRequest(
            slug=target.slug, method=ex.method, path=target.path, portal_path=target.portal_path,
            session_key=session_key, client_address=ex.client_address, request_id=ex.request_id,
            issuer=conf.issuer or ex.portal_origin or f"https://{host}", replay_token=replay_token,
            via_isolation=bool(app_session and app_session.isolated))
        admission = admit_from_memory(req)
        bucket = admission.bucket if admission is not None else None
        if bucket is not None and await limiter().atake(*bucket):
            admission = None  # out of tokens: the full admission answers and audits the 429
        if admission is None:
            admission = await self._gate(req)
        ex.actor = admission.actor
        ex.decision = str(admission.verdict)

        if ex.portal_origin and admission.location.startswith("/"):
            # Sign-in and step-up pages live on the portal's origin, not the app's.
            admission = replace(admission, location=ex.portal_origin + admission.location)
        if admission.verdict is Verdict.ALLOW:
            await self._forward(scope, receive, send, ex, target, admission, length,
                                scheme=scheme, host=host)
        elif admission.verdict in (Verdict.LOGIN, Verdict.MFA) and app_slug is not None:
            await self._start_handoff(scope, send, ex, target, query, scheme=scheme, host=host)
        elif admission.verdict in (Verdict.LOGIN, Verdict.MFA):
            if _wants_json(scope):
                await self._json(send, ex, 401, {"error": str(admission.verdict),
                                                 "location": admission.location})
            else:
                await self._redirect(send, ex, admission.location, 302 if ex.method in _SAFE else 303)
        elif admission.verdict is Verdict.STEP_UP:
            await self._step_up(scope, receive, send, ex, req, target, admission, length)
        elif admission.verdict is Verdict.NOT_FOUND:
            await self._page(send, ex, 404, "errors/404.html")
        elif admission.verdict is Verdict.RATE_LIMITED:
            await self._page(send, ex, 429, "proxy/rate_limited.html", retry_after=admission.retry_after,
                             resource=admission.resource_name,
                             extra_headers=[(b"retry-after", str(admission.retry_after).encode())])
        elif admission.verdict is Verdict.GONE:
            await self._page(send, ex, 410, "proxy/gone.html", resource=admission.resource_name,
                             app_url=target.prefix)
        elif admission.verdict is Verdict.ISOLATE and ex.method in _SAFE and not _wants_json(scope):
            # The tier streams this app: straight to its isolated session (issue 13).
            await self._redirect(send, ex, f"{ex.portal_origin}/desktop/{target.slug}/", 302)
        else:
            await self._page(send, ex, 403, "proxy/denied.html", resource=admission.resource_name,
                             isolate=admission.verdict is Verdict.ISOLATE, slug=target.slug,
                             reasons=[r.as_dict() for r in admission.reasons])

    async def _step_up(self, scope: Scope, receive: Receive, send: Send, ex: _Exchange,
                       req: GateRequest, target: ProxyPath, admission: Admission,
                       length: int | None) -> None:
        if not admission.hold_body:
            await self._redirect(send, ex, admission.location, 302)
            return
        limit = settings.PORTAL_PROXY_HOLD_MAX_BYTES
        body = bytearray()
        if length is None or length <= limit:
            async for chunk in _body(receive, ex):
                body += chunk
                if len(body) > limit:
                    break
        if (length is not None and length > limit) or len(body) > limit:
            await self._page(send, ex, 413, "proxy/too_large.html", resource=admission.resource_name,
                             limit_kib=limit // 1024,
                             step_up_url="/accounts/step-up/?" + urlencode({"next": target.prefix}))
            return
        kept = tuple((k, v) for k, v in (
            (n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in scope["headers"])
            if k not in HOP_BY_HOP and k not in ("host", "content-length"))
        held = pending.HeldRequest(ex.method, target.upstream_path, target.path, target.query, kept,
                                   bytes(body))
        location = await self._hold(req, admission, held)
        if ex.portal_origin:
            location = ex.portal_origin + location
        await self._redirect(send, ex, location, 303)

    async def _forward(self, scope: Scope, receive: Receive, send: Send, ex: _Exchange,
                       target: ProxyPath, admission: Admission, length: int | None, *,
                       scheme: str, host: str) -> None:
        try:
            upstream = upstream_for(admission.upstream)
        except UpstreamError:
            logger.error("resource %s has an unusable upstream", target.slug)
            await self._page(send, ex, 502, "proxy/unavailable.html", decision="error")
            return
        held = admission.held
        method = held.method if held else ex.method
        upstream_path = held.upstream_path if held else target.upstream_path
        query = held.query if held else target.query
        raw_headers = ([(k.encode("latin-1"), v.encode("latin-1")) for k, v in held.headers]
                       if held else scope["headers"])
        headers = upstream_request_headers(
            raw_headers, assertion=admission.assertion, client_address=ex.client_address,
            proto=scheme, host=host, prefix=_public_prefix(scope, target).rstrip("/"),
            portal_cookies=_conf().portal_cookies)
        headers.append(("x-request-id", ex.request_id))
        content: bytes | AsyncIterator[bytes] | None
        if held is not None:
            content = held.body
            ex.bytes_in = len(held.body)
            headers = [(k, v) for k, v in headers if k != "content-length"]
        elif length is None and _header(scope, b"transfer-encoding") is None:
            content = None
        else:
            content = _body(receive, ex)
        try:
            response = await self.clients.for_upstream(upstream).request(
                method, upstream.target(upstream_path, query), headers, content)
        except TimeoutError:
            await self._page(send, ex, 504, "proxy/unavailable.html", decision="allow",
                             resource=admission.resource_name, timeout=True)
            return
        except OSError as exc:  # refused, reset, closed, broken HTTP (UpstreamBroken)
            if _caused_by_client_leaving(exc):
                raise _ClientGone from exc
            await self._page(send, ex, 502, "proxy/unavailable.html", decision="allow",
                             resource=admission.resource_name)
            return
        try:
            name = download_name(response.raw_headers) if admission.downloads else None
            if name is None:
                await self._relay(scope, receive, send, ex, response, upstream, target)
            elif admission.downloads == "deny":
                await self._audit_download(ex, admission, name, "deny")
                await self._page(send, ex, 403, "proxy/denied.html", decision="deny",
                                 resource=admission.resource_name,
                                 heading="Downloads are not allowed here",
                                 reasons=[{"message": f"The file {name!r} stays in the isolated session: "
                                                      "this tier allows no file transfer.",
                                           "remedy": "Ask an admin if you need the file."}])
            else:
                tap = hashlib.sha256()
                await self._relay(scope, receive, send, ex, response, upstream, target, tap=tap)
                await self._audit_download(ex, admission, name, "allow", size=ex.bytes_out,
                                           sha256=tap.hexdigest())
        finally:
            response.release()

    async def _audit_download(self, ex: _Exchange, admission: Admission, name: str, outcome: str,
                              **detail: Any) -> None:
        await database_sync_to_async(record, thread_sensitive=False)(
            "isolation.download", outcome=outcome, actor=admission.actor, resource=ex.slug,
            client_address=ex.client_address, request_id=ex.request_id,
            detail={"name": name, "path": ex.path[:500], **detail})

    async def _relay(self, scope: Scope, receive: Receive, send: Send, ex: _Exchange,
                     response: UpstreamResponse, upstream: Upstream, target: ProxyPath,
                     tap: Any = None) -> None:
        conf = _conf()
        rewrite = ResponseRewrite(upstream.origin, upstream.base_path, _public_prefix(scope, target),
                                  frozenset(conf.portal_cookies))
        headers = response_headers(response.raw_headers, rewrite)
        headers += _security_headers(ex)
        if scope.get(APP_SLUG) is None:
            headers.append(_SANDBOX)
        ex.status = response.status
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        if ex.method == "HEAD" or response.status in _BODYLESS_STATUS:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        gone = asyncio.Event()
        watcher: asyncio.Task[None] | None = None
        length = response.content_length  # None when the upstream streams it chunked
        try:
            async for chunk in response.iter_chunks(conf.chunk_bytes):
                if gone.is_set():
                    raise _ClientGone
                ex.bytes_out += len(chunk)
                if tap is not None:
                    tap.update(chunk)
                if length is not None and ex.bytes_out >= length:
                    # The whole announced body: end with this piece (one send less per response).
                    await send({"type": "http.response.body", "body": chunk, "more_body": False})
                    return
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if watcher is None and ex.bytes_out > conf.chunk_bytes:
                    # A long download: notice the browser leaving instead of reading on.
                    watcher = asyncio.create_task(_watch_disconnect(receive, gone))
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    # --- an app's own origin: its session, handed over by the portal ------------------

    async def _app_session(self, scope: Scope, slug: str) -> handoff.AppSession | None:
        token = _cookie(scope, handoff.APP_COOKIE)
        known = handoff.remembered_app_session(token, slug)
        if known is not False:
            return known or None
        return await database_sync_to_async(handoff.app_session, thread_sensitive=False)(token, slug)

    async def _start_handoff(self, scope: Scope, send: Send, ex: _Exchange, target: ProxyPath,
                             query: str, *, scheme: str, host: str) -> None:
        """No app session (or its portal session is over): ask the portal for one."""
        state = handoff.new_state()
        back = handoff.safe_next((target.upstream_path or "/") + (f"?{query}" if query else ""))
        location = (f"{ex.portal_origin}/handoff/{target.slug}/?"
                    + urlencode({"state": state, "next": back}))
        ex.decision = "login"
        cookie = (f"{handoff.STATE_COOKIE}={state}; Path=/; Secure; HttpOnly; SameSite=Lax; "
                  f"Max-Age={handoff.STATE_SECONDS}")
        if _wants_json(scope):
            await self._raw(send, ex, 401, json.dumps({"error": "login", "location": location}).encode(),
                            [(b"content-type", b"application/json"), (b"cache-control", b"no-store"),
                             (b"set-cookie", cookie.encode())])
            return
        await self._raw(send, ex, 302 if ex.method in _SAFE else 303, b"", [
            (b"location", location.encode("latin-1")), (b"cache-control", b"no-store"),
            (b"set-cookie", cookie.encode())])

    async def _reserved(self, scope: Scope, send: Send, ex: _Exchange, target: ProxyPath,
                        query: str, *, scheme: str, host: str) -> None:
        """``/.portal/...`` on an app's origin: answered here, never forwarded."""
        isolated = target.upstream_path == f"{RESERVED_PREFIX}isolated"
        if (target.upstream_path != f"{RESERVED_PREFIX}callback" and not isolated) or ex.method != "GET":
            await self._page(send, ex, 404, "errors/404.html", decision="not_found")
            return
        params = parse_qs(query)
        code = (params.get("code") or [""])[0]
        if isolated:  # the start address of the user's isolated browser (streaming.isolation)
            redeemed = await database_sync_to_async(handoff.redeem_isolation_code, thread_sensitive=False)(
                code, slug=target.slug)
        else:
            redeem = database_sync_to_async(handoff.redeem_code, thread_sensitive=False)
            redeemed = await redeem(code, slug=target.slug, state=_cookie(scope, handoff.STATE_COOKIE))
        if redeemed is None:
            await self._page(send, ex, 400, "proxy/bad_request.html", decision="bad_request",
                             problem="this sign-in link for the app was already used, has expired, "
                                     "or was opened in another browser",
                             retry_url=app_origin(target.slug, _conf().apps_domain, scheme=scheme,
                                                  port=split_host(host)[1]) + "/")
            return
        token = await database_sync_to_async(handoff.open_app_session, thread_sensitive=False)(redeemed)
        ex.decision = "allow"
        await self._raw(send, ex, 303, b"", [
            (b"location", handoff.safe_next((params.get("next") or ["/"])[0]).encode("latin-1")),
            (b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer"),
            (b"set-cookie", f"{handoff.APP_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Lax"
                            .encode()),
            (b"set-cookie", f"{handoff.STATE_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; "
                            "Max-Age=0".encode())])

    # --- small responses -------------------------------------------------------------

    async def _redirect(self, send: Send, ex: _Exchange, location: str, status: int,
                        decision: str | None = None) -> None:
        if decision:
            ex.decision = decision
        await self._raw(send, ex, status, b"", [(b"location", location.encode("latin-1")),
                                                (b"cache-control", b"no-store")])

    async def _json(self, send: Send, ex: _Exchange, status: int, body: dict[str, Any]) -> None:
        await self._raw(send, ex, status, json.dumps(body).encode(),
                        [(b"content-type", b"application/json"), (b"cache-control", b"no-store")])

    async def _page(self, send: Send, ex: _Exchange, status: int, template: str, *,
                    decision: str | None = None, extra_headers: list[tuple[bytes, bytes]] | None = None,
                    **context: Any) -> None:
        if decision:
            ex.decision = decision
        context.update(request=SimpleNamespace(request_id=ex.request_id, path=ex.path),
                       request_id=ex.request_id,
                       # on an app's origin the page's links and styles are the portal's
                       portal_base=f"{ex.portal_origin}/" if ex.portal_origin else "")
        body = render_to_string(template, context).encode()
        await self._raw(send, ex, status, body, [(b"content-type", b"text/html; charset=utf-8"),
                                                 (b"cache-control", b"no-store"),
                                                 *(extra_headers or [])])

    async def _raw(self, send: Send, ex: _Exchange, status: int, body: bytes,
                   headers: list[tuple[bytes, bytes]]) -> None:
        ex.status = status
        ex.bytes_out = len(body)
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(body)).encode()),
                                *_security_headers(ex)]})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _security_headers(ex: _Exchange) -> list[tuple[bytes, bytes]]:
    return [(b"x-request-id", ex.request_id.encode()), *_conf().security_headers]


def _cookie(scope: Scope, name: str) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    # Django's own parser, so the proxy and the portal's pages agree on which cookie counts.
    return parse_cookie(raw).get(name) or None


def _session_key(scope: Scope) -> str | None:
    """The portal session cookie (path mode: the app shares the portal's origin)."""
    return _cookie(scope, _conf().session_cookie)


def _public_prefix(scope: Scope, target: ProxyPath) -> str:
    """Where the app's paths start as the browser sees them: ``/`` on its own origin."""
    return "/" if scope.get(APP_SLUG) is not None else target.prefix


def app_slug_of(scope: Scope) -> str | None:
    """The app whose own origin ``scope``'s Host names (None: the portal's origin)."""
    return app_slug_for_host(_header(scope, b"host") or "", _conf().apps_domain)


def _wants_json(scope: Scope) -> bool:
    accept = _header(scope, b"accept") or ""
    return accept.startswith("application/json") or _header(scope, b"x-requested-with") is not None


async def _body(receive: Receive, ex: _Exchange) -> AsyncIterator[bytes]:
    """The request body as it arrives (each chunk is forwarded before the next is read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
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
        if isinstance(seen, _ClientGone):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return

