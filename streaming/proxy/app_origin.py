"""An app's own origin (host mode): its session found, handed over, or opened.

The protocol lives in :mod:`streaming.proxy.handoff` (codes, tokens, the cache); this module
is its ASGI side: reading the app cookie, sending a browser without an app session to the
portal's ``/handoff/<slug>/``, and answering ``/.portal/callback`` and ``/.portal/isolated``
on the app's origin, which are never forwarded.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlencode

from channels.db import database_sync_to_async

from streaming.proxy import handoff
from streaming.proxy.conf import proxy_conf
from streaming.proxy.exchange import Exchange, page, raw
from streaming.proxy.origins import RESERVED_PREFIX, app_origin, split_host
from streaming.proxy.scope import Scope, cookie, wants_json

__all__ = ["answer_reserved", "app_session", "start_handoff"]

_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_COOKIE_FLAGS = "Path=/; Secure; HttpOnly; SameSite=Lax"


async def app_session(scope: Scope, slug: str) -> handoff.AppSession | None:
    """The app session the request's app cookie names (from memory when known)."""
    token = cookie(scope, handoff.APP_COOKIE)
    known = handoff.remembered_app_session(token, slug)
    if known is not False:
        return known or None
    return await database_sync_to_async(handoff.app_session, thread_sensitive=False)(token, slug)


async def start_handoff(ex: Exchange) -> None:
    """No app session (or its portal session is over): ask the portal for one."""
    target = ex.vetted.target
    assert target is not None
    state = handoff.new_state()
    back = handoff.safe_next((target.upstream_path or "/") + (f"?{target.query}" if target.query else ""))
    location = f"{ex.portal_origin}/handoff/{target.slug}/?" + urlencode({"state": state, "next": back})
    ex.decision = "login"
    set_state = f"{handoff.STATE_COOKIE}={state}; {_COOKIE_FLAGS}; Max-Age={handoff.STATE_SECONDS}"
    if wants_json(ex.scope):
        await raw(ex, 401, json.dumps({"error": "login", "location": location}).encode(),
                  [(b"content-type", b"application/json"), (b"cache-control", b"no-store"),
                   (b"set-cookie", set_state.encode())])
        return
    await raw(ex, 302 if ex.method in _SAFE else 303, b"", [
        (b"location", location.encode("latin-1")), (b"cache-control", b"no-store"),
        (b"set-cookie", set_state.encode())])


async def answer_reserved(ex: Exchange) -> None:
    """``/.portal/...`` on an app's origin: answered here, never forwarded."""
    vetted = ex.vetted
    target = vetted.target
    assert target is not None
    isolated = target.upstream_path == f"{RESERVED_PREFIX}isolated"
    if (target.upstream_path != f"{RESERVED_PREFIX}callback" and not isolated) or ex.method != "GET":
        await page(ex, 404, "errors/404.html", decision="not_found")
        return
    params = parse_qs(target.query)
    code = (params.get("code") or [""])[0]
    if isolated:  # the start address of the user's isolated browser (streaming.isolation)
        redeemed = await database_sync_to_async(handoff.redeem_isolation_code, thread_sensitive=False)(
            code, slug=target.slug)
    else:
        redeem = database_sync_to_async(handoff.redeem_code, thread_sensitive=False)
        redeemed = await redeem(code, slug=target.slug, state=cookie(ex.scope, handoff.STATE_COOKIE))
    if redeemed is None:
        retry = app_origin(target.slug, proxy_conf().apps_domain, scheme=vetted.scheme,
                           port=split_host(vetted.host)[1]) + "/"
        await page(ex, 400, "proxy/bad_request.html", decision="bad_request",
                   problem="this sign-in link for the app was already used, has expired, "
                           "or was opened in another browser", retry_url=retry)
        return
    token = await database_sync_to_async(handoff.open_app_session, thread_sensitive=False)(redeemed)
    ex.decision = "allow"
    await raw(ex, 303, b"", [
        (b"location", handoff.safe_next((params.get("next") or ["/"])[0]).encode("latin-1")),
        (b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer"),
        (b"set-cookie", f"{handoff.APP_COOKIE}={token}; {_COOKIE_FLAGS}".encode()),
        (b"set-cookie", f"{handoff.STATE_COOKIE}=; {_COOKIE_FLAGS}; Max-Age=0".encode())])
