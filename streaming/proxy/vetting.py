"""Vetting a request before anyone is asked about it: one function for HTTP and WebSocket.

Everything the proxy checks before the admission — the request target, the headers' framing,
which origin the request came to (the portal's or an app's own), the client address and
scheme behind trusted proxies, the Host, HTTPS, same-origin — is decided here, from the
request's own words and a settings snapshot, with no I/O. The HTTP side
(:mod:`streaming.proxy.app`) and the WebSocket side (:mod:`streaming.proxy.websocket`) call
the same :func:`vet` and only translate its :class:`Vetting` into their own kind of answer,
so the two can no longer drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from urllib.parse import quote

from portal.network import resolve_client_address
from streaming.proxy.conf import ProxyConf, proxy_conf
from streaming.proxy.headers import HeaderError, check_request_headers, same_origin
from streaming.proxy.origins import RESERVED_PREFIX, app_origin, split_host
from streaming.proxy.paths import PathError, ProxyPath, parse_target
from streaming.proxy.pending import REPLAY_PREFIX
from streaming.proxy.scope import APP_SLUG, Scope, header, header_table

__all__ = ["Arrival", "Turn", "Vetting", "app_slug_of", "arrival_of", "vet"]

_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


class Turn(StrEnum):
    """Why a request is answered before (and instead of) its admission."""

    BAD_REQUEST = "bad_request"  # malformed or ambiguous target or headers, unknown host
    NOT_FOUND = "not_found"  # a WebSocket to /apps/ on the portal's origin in host mode
    INSECURE = "insecure"  # plain HTTP where HTTPS is required
    TO_APP_ORIGIN = "to_app_origin"  # /apps/<slug>/ on the portal's origin in host mode
    ADD_SLASH = "add_slash"  # /apps/<slug> without the slash
    RESERVED = "reserved"  # /.portal/... on an app's origin: the portal answers it itself
    CROSS_SITE = "cross_site"  # another site's unsafe request, or any cross-origin handshake
    REPLAY_METHOD = "replay_method"  # a replay link opened with anything but GET


@dataclass(slots=True)
class Arrival:
    """What a request says about itself: the parts of an ASGI scope vetting reads."""

    method: str  # "GET" for a WebSocket handshake
    raw_path: str
    query: str
    headers: Sequence[tuple[bytes, bytes]]
    table: Mapping[bytes, bytes]  # the first value of each header, names in lower case
    scheme: str  # http or https, as the server saw it (ws/wss mapped)
    peer: str
    app_slug: str | None  # the app whose own origin the Host names; None: the portal's
    websocket: bool = False

    def field(self, name: bytes) -> str | None:
        """The first value of header ``name`` (lower case), read only when a check needs it."""
        value = self.table.get(name)
        return None if value is None else value.decode("latin-1")


@dataclass(slots=True)
class Vetting:
    """The verdict of :func:`vet`: go on to the admission (``turn`` None) or answer now."""

    turn: Turn | None
    status: int = 0  # the HTTP status of a turn
    problem: str = ""  # what was wrong (BAD_REQUEST, REPLAY_METHOD)
    location: str = ""  # where a redirecting turn sends the browser
    target: ProxyPath | None = None  # None only when the target itself was refused
    length: int | None = None  # Content-Length (None: chunked, or no body)
    scheme: str = "http"  # as the browser sees it (behind a trusted proxy: X-Forwarded-Proto)
    host: str = ""
    client_address: str = ""
    portal_origin: str = ""  # on an app's origin: where the portal's own pages are
    issuer: str = ""  # the assertion's iss
    replay_token: str | None = None  # a held post's replay link (see streaming.proxy.pending)

    @property
    def record_path(self) -> str:
        """The path (and query) the access record names."""
        if self.target is None:
            return ""
        query = self.target.query
        return (self.target.upstream_path or "/") + (f"?{query}" if query else "")


def arrival_of(scope: Scope, *, websocket: bool = False) -> Arrival:
    """The :class:`Arrival` of an HTTP request or WebSocket handshake."""
    scheme = scope.get("scheme", "http")
    if websocket:
        scheme = "https" if scheme == "wss" else "http"
    raw_path = scope.get("raw_path", b"").decode("latin-1")
    if not raw_path and not websocket:
        raw_path = quote(scope["path"])
    return Arrival("GET" if websocket else scope["method"], raw_path,
                   scope.get("query_string", b"").decode("latin-1"), scope["headers"], header_table(scope),
                   scheme, (scope.get("client") or ("", 0))[0], scope.get(APP_SLUG), websocket)


def app_slug_of(scope: Scope) -> str | None:
    """The app whose own origin ``scope``'s Host names (None: the portal's origin)."""
    return proxy_conf().app_slug(header(scope, b"host") or "")


def _target(arrival: Arrival) -> tuple[ProxyPath, int | None]:
    """The vetted target and body length; raises HeaderError or PathError."""
    length = check_request_headers(arrival.headers)
    slug, raw_path = arrival.app_slug, arrival.raw_path
    if slug is not None and not raw_path.startswith("/"):
        raise PathError("the request target is not a path")
    # On an app's own origin the whole path is the app's: vetted exactly as under /apps/.
    target = parse_target(f"/apps/{slug}{raw_path}" if slug else raw_path, arrival.query)
    if target is None:
        raise PathError("not under /apps/")
    if arrival.websocket and not target.upstream_path:
        raise PathError("not a path inside an app")
    if arrival.websocket and target.upstream_path.startswith((REPLAY_PREFIX, RESERVED_PREFIX)):
        raise PathError("the portal's own paths are not WebSockets")
    return target, length


def _behind_proxies(arrival: Arrival, conf: ProxyConf) -> tuple[str, str]:
    """(client address, scheme): a trusted proxy's X-Forwarded-* count, nobody else's."""
    if not conf.peer_trusted(arrival.peer):
        return arrival.peer, arrival.scheme
    client = resolve_client_address(arrival.peer, arrival.field(b"x-forwarded-for"), conf.trusted_proxies)
    https = (arrival.field(b"x-forwarded-proto") or "").strip().lower() == "https"
    return client, "https" if https else arrival.scheme


def _same_origin(arrival: Arrival, scheme: str, host: str) -> bool:
    if not arrival.websocket and arrival.method in _SAFE:
        return True
    origin, fetch_site = arrival.field(b"origin"), arrival.field(b"sec-fetch-site")
    if arrival.websocket:
        # Browsers always send Origin on a handshake: it must be this very origin, and Fetch
        # Metadata (when sent) must agree: cross-site WebSocket hijacking.
        return (same_origin(origin, None, scheme=scheme, host=host)
                and same_origin(None, fetch_site, scheme=scheme, host=host))
    return same_origin(origin, fetch_site, scheme=scheme, host=host)


def vet(arrival: Arrival, conf: ProxyConf) -> Vetting:
    """Everything decided about a request before its admission, in the order it is checked."""
    try:
        target, length = _target(arrival)
    except (HeaderError, PathError) as exc:
        return Vetting(Turn.BAD_REQUEST, 400, problem=str(exc), client_address=arrival.peer)
    client, scheme = _behind_proxies(arrival, conf)
    host, on_app = arrival.field(b"host") or "", arrival.app_slug is not None
    origin = conf.portal_origin(scheme, host) if on_app else ""
    vetted = Vetting(None, target=target, length=length, scheme=scheme, host=host,
                     client_address=client, portal_origin=origin,
                     issuer=conf.issuer or origin or f"https://{host}")
    turn = _turn(arrival, conf, vetted)
    if turn is not None:
        return turn
    if target.upstream_path.startswith(REPLAY_PREFIX):
        return _with(vetted, replay_token=target.upstream_path[len(REPLAY_PREFIX):])
    return vetted


def _turn(arrival: Arrival, conf: ProxyConf, vetted: Vetting) -> Vetting | None:
    """The turn a vetted target still takes before the admission, if any."""
    target, scheme, host = vetted.target, vetted.scheme, vetted.host
    assert target is not None
    on_app, query = arrival.app_slug is not None, (f"?{arrival.query}" if arrival.query else "")
    if arrival.websocket and not on_app and conf.apps_domain:
        return _with(vetted, turn=Turn.NOT_FOUND, status=404)  # apps answer on their own origins
    if not on_app and not conf.host_allowed(host):
        return _with(vetted, turn=Turn.BAD_REQUEST, status=400, problem="unknown host")
    if scheme != "https" and conf.ssl_redirect:
        where = arrival.raw_path + query if on_app else target.portal_path
        return _with(vetted, turn=Turn.INSECURE, status=403 if arrival.websocket else 301,
                     location=f"https://{host}{where}")
    if not on_app and conf.apps_domain:
        # Host mode: the portal's origin never serves an app's bytes; old links move on.
        origin = app_origin(target.slug, conf.apps_domain, scheme=scheme, port=split_host(host)[1])
        return _with(vetted, turn=Turn.TO_APP_ORIGIN, status=302 if arrival.method in _SAFE else 308,
                     location=origin + (target.upstream_path or "/") + query)
    if not target.upstream_path:
        return _with(vetted, turn=Turn.ADD_SLASH, status=301, location=target.prefix + query)
    if on_app and target.upstream_path.startswith(RESERVED_PREFIX) \
            and not target.upstream_path.startswith(REPLAY_PREFIX):
        return _with(vetted, turn=Turn.RESERVED)
    if not _same_origin(arrival, scheme, host):
        return _with(vetted, turn=Turn.CROSS_SITE, status=403)
    if target.upstream_path.startswith(REPLAY_PREFIX) and arrival.method != "GET":
        return _with(vetted, turn=Turn.REPLAY_METHOD, status=405, problem="replay links are opened with GET")
    return None


def _with(vetting: Vetting, **changes: object) -> Vetting:
    return replace(vetting, **changes)  # type: ignore[arg-type]
