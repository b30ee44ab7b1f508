"""One proxied HTTP request as it goes, and the small answers the proxy gives itself.

An :class:`Exchange` is made when a request arrives and travels through every step (vetting,
admission, hold, forward, relay): it holds the ASGI callables, what vetting and the
admission said, and what the access record will say. Steps take the exchange instead of
eight loose arguments, and nothing untyped travels between them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from django.template.loader import render_to_string

from streaming.proxy.access import Admission
from streaming.proxy.conf import proxy_conf
from streaming.proxy.records import AccessEntry
from streaming.proxy.scope import APP_SLUG, Receive, Scope, Send
from streaming.proxy.vetting import Vetting

__all__ = ["ClientGone", "Exchange", "page", "raw", "redirect", "reply_json"]

Headers = list[tuple[bytes, bytes]]


class ClientGone(Exception):
    """The browser went away mid-request."""


@dataclass(slots=True)
class Exchange:
    """One request: its ASGI side, what was decided about it, and its access record."""

    scope: Scope
    receive: Receive
    send: Send
    method: str
    path: str
    client_address: str
    started: float = field(default_factory=time.perf_counter)
    request_id: str = field(default_factory=lambda: os.urandom(16).hex())  # a uuid4's worth
    slug: str = ""
    actor: str = ""
    status: int = 0
    decision: str = "error"
    bytes_in: int = 0
    bytes_out: int = 0
    portal_origin: str = ""  # on an app's origin: where the portal's own pages are
    vetting: Vetting | None = None
    admission: Admission | None = None

    @classmethod
    def begin(cls, scope: Scope, receive: Receive, send: Send) -> Exchange:
        """The exchange of a request that has just arrived."""
        return cls(scope, receive, send, scope["method"],
                   scope.get("raw_path", b"").decode("latin-1") or scope["path"],
                   (scope.get("client") or ("", 0))[0])

    @property
    def on_app_origin(self) -> bool:
        """Whether the request came to an app's own origin (host mode)."""
        return self.scope.get(APP_SLUG) is not None

    @property
    def vetted(self) -> Vetting:
        """What vetting said (set before any step after it runs)."""
        assert self.vetting is not None and self.vetting.target is not None
        return self.vetting

    def entry(self) -> AccessEntry:
        """The access record of this request."""
        return AccessEntry(
            actor=self.actor, resource=self.slug, method=self.method, path=self.path[:2000],
            status=self.status, decision=self.decision, bytes_in=self.bytes_in,
            bytes_out=self.bytes_out, duration_ms=(time.perf_counter() - self.started) * 1000,
            client_address=self.client_address, request_id=self.request_id)


def security_headers(ex: Exchange) -> Headers:
    """What every answer carries: its request id and HSTS."""
    return [(b"x-request-id", ex.request_id.encode()), *proxy_conf().security_headers]


async def raw(ex: Exchange, status: int, body: bytes, headers: Headers) -> None:
    """A whole answer the proxy makes itself."""
    ex.status = status
    ex.bytes_out = len(body)
    await ex.send({"type": "http.response.start", "status": status,
                   "headers": [*headers, (b"content-length", str(len(body)).encode()),
                               *security_headers(ex)]})
    await ex.send({"type": "http.response.body", "body": body, "more_body": False})


async def redirect(ex: Exchange, location: str, status: int, decision: str | None = None) -> None:
    """A redirect, never cached."""
    if decision:
        ex.decision = decision
    await raw(ex, status, b"", [(b"location", location.encode("latin-1")), (b"cache-control", b"no-store")])


async def reply_json(ex: Exchange, status: int, body: dict[str, Any], extra: Headers | None = None) -> None:
    """A JSON answer for a script."""
    await raw(ex, status, json.dumps(body).encode(),
              [(b"content-type", b"application/json"), (b"cache-control", b"no-store"), *(extra or [])])


async def page(ex: Exchange, status: int, template: str, *, decision: str | None = None,
               extra_headers: Headers | None = None, **context: Any) -> None:
    """A page of the portal's (denied, 404, too large ...), with the portal's look."""
    if decision:
        ex.decision = decision
    context.update(request=SimpleNamespace(request_id=ex.request_id, path=ex.path),
                   request_id=ex.request_id,
                   # on an app's origin the page's links and styles are the portal's
                   portal_base=f"{ex.portal_origin}/" if ex.portal_origin else "")
    body = render_to_string(template, context).encode()
    await raw(ex, status, body, [(b"content-type", b"text/html; charset=utf-8"),
                                 (b"cache-control", b"no-store"), *(extra_headers or [])])
