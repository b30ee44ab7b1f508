"""Header hygiene between the browser, the portal and an upstream app (pure, no I/O).

Requests: refuse framing the portal and the upstream could read differently (request
smuggling), strip hop-by-hop headers and every identity header a client could forge, keep
the portal's own cookies to ourselves, then add what the portal vouches for. Responses:
strip hop-by-hop headers and rewrite redirects and cookie paths into the app's prefix, so
the browser never learns the upstream's address and an app cannot set or clear the
portal's cookies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit

__all__ = [
    "ASSERTION_HEADER",
    "HeaderError",
    "ResponseRewrite",
    "check_request_headers",
    "response_headers",
    "same_origin",
    "strip_cookies",
    "upstream_request_headers",
]

ASSERTION_HEADER = "x-portal-assertion"

MAX_HEADER_COUNT = 100
MAX_HEADER_BYTES = 16 * 1024  # all names and values together
MAX_FIELD_BYTES = 8 * 1024

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "proxy-authenticate", "proxy-authorization",
})
# Headers upstream apps commonly believe as "the proxy told me who this is".
IDENTITY_HEADERS = frozenset({
    "remote-user", "x-remote-user", "x-remote-email", "x-remote-groups", "x-remote-name",
    "x-user", "x-username", "x-email", "x-groups", "x-user-id", "x-user-email",
    "x-authenticated-user", "x-authenticated-email", "x-authenticated-groups", "x-webauth-user",
    "x-forwarded-user", "x-forwarded-email", "x-forwarded-groups", "x-forwarded-preferred-username",
    "x-forwarded-access-token", "x-id-token", "x-access-token", "x-real-ip", "forwarded",
    "x-original-url", "x-rewrite-url", "x-original-uri", "x-forwarded-uri", "x-forwarded-path",
    "x-http-method-override", "x-http-method", "x-method-override", "x-request-id",
})
IDENTITY_PREFIXES = ("x-portal-", "x-forwarded-", "x-auth-request-", "x-amzn-oidc-",
                     "x-goog-authenticated-", "x-ms-client-principal", "cf-access-",
                     "x-pomerium-", "x-remote-", "x-authenticated-", "x-webauth-", "oidc_")
# Headers a client may not name in Connection: dropping them would remove framing or what
# the portal vouches for.
_PROTECTED = frozenset({"host", "content-length", "content-type", "cookie", "authorization"})
# Response headers an app behind a path prefix must not send: they act on the whole portal
# origin (log the user out of the portal, widen a service worker to every page).
_RESPONSE_DROP = frozenset({"clear-site-data", "service-worker-allowed", "alt-svc", "server",
                            "x-powered-by", "strict-transport-security"})
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_DIGITS = re.compile(rb"^[0-9]{1,19}$")


class HeaderError(ValueError):
    """The request's headers are malformed or ambiguous: answer 400, never forward."""


def _is_identity(name: str) -> bool:
    return name in IDENTITY_HEADERS or name.startswith(IDENTITY_PREFIXES)


def check_request_headers(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    """Validate framing and size; return the body length (None when chunked / unknown).

    Raises :class:`HeaderError` on conflicting or repeated Content-Length, Content-Length
    together with Transfer-Encoding, a transfer coding other than ``chunked``, oversized
    headers, and hop-by-hop abuse (a Connection header naming what framing relies on).
    """
    if len(headers) > MAX_HEADER_COUNT:
        raise HeaderError(f"more than {MAX_HEADER_COUNT} header fields")
    total = 0
    lengths: list[bytes] = []
    codings: list[bytes] = []
    for raw_name, value in headers:
        total += len(raw_name) + len(value)
        if len(raw_name) + len(value) > MAX_FIELD_BYTES:
            raise HeaderError("a header field is too large")
        if not _TOKEN.match(raw_name):
            raise HeaderError("a header name is not a token")
        if b"\r" in value or b"\n" in value or b"\0" in value:
            raise HeaderError("a header value holds a line break or NUL")
        name = raw_name.lower()
        if name == b"content-length":
            lengths.extend(v.strip() for v in value.split(b","))
        elif name == b"transfer-encoding":
            codings.extend(v.strip().lower() for v in value.split(b",") if v.strip())
        elif name == b"connection":
            for token in (t.strip().lower().decode("latin-1") for t in value.split(b",")):
                if token in _PROTECTED or token == ASSERTION_HEADER or token.startswith("x-forwarded-"):
                    raise HeaderError(f"Connection may not name {token!r}")
    if total > MAX_HEADER_BYTES:
        raise HeaderError(f"headers larger than {MAX_HEADER_BYTES} bytes")
    if lengths and codings:
        raise HeaderError("both Content-Length and Transfer-Encoding")
    if codings and codings != [b"chunked"]:
        raise HeaderError("a transfer coding other than chunked")
    if lengths:
        if len(set(lengths)) != 1 or not _DIGITS.match(lengths[0]):
            raise HeaderError("conflicting or malformed Content-Length")
        return int(lengths[0])
    return None


def strip_cookies(cookie_header: str, names: Iterable[str]) -> str:
    """The Cookie header without the named cookies (the portal's session and CSRF)."""
    drop = set(names)
    kept = []
    for part in cookie_header.split(";"):
        item = part.strip()
        if not item:
            continue
        name = item.split("=", 1)[0].strip()
        if name in drop:
            continue
        kept.append(item)
    return "; ".join(kept)


def upstream_request_headers(
    headers: Sequence[tuple[bytes, bytes]], *, assertion: str, client_address: str, proto: str,
    host: str, prefix: str, portal_cookies: Iterable[str], keep_upgrade: bool = False,
) -> list[tuple[str, str]]:
    """The headers the upstream receives: the client's, cleaned, plus what the portal vouches for."""
    named_by_connection: set[str] = set()
    for raw_name, value in headers:
        if raw_name.lower() == b"connection":
            named_by_connection.update(t.strip().lower() for t in value.decode("latin-1").split(","))
    hop = HOP_BY_HOP - {"upgrade"} if keep_upgrade else HOP_BY_HOP
    out: list[tuple[str, str]] = []
    cookies: list[str] = []
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        if name in hop or name in named_by_connection or name == "host" or _is_identity(name):
            continue
        if "_" in name:
            # WSGI and CGI servers turn "X-Remote_User" into HTTP_X_REMOTE_USER, the very
            # variable "X-Remote-User" would set: no underscore name reaches an upstream.
            continue
        value = raw_value.decode("latin-1")
        if name == "cookie":
            cookies.append(value)
            continue
        out.append((name, value))
    if cookies:
        kept = strip_cookies("; ".join(cookies), portal_cookies)
        if kept:
            out.append(("cookie", kept))
    out += [
        (ASSERTION_HEADER, assertion),
        ("x-forwarded-for", client_address),
        ("x-forwarded-proto", proto),
        ("x-forwarded-host", host),
    ]
    if prefix:  # path mode only: on its own origin the app starts at "/"
        out.append(("x-forwarded-prefix", prefix))
    return out


@dataclass(frozen=True)
class ResponseRewrite:
    """How upstream URLs map into the portal: ``upstream_base`` <-> ``prefix``."""

    upstream_origin: str  # scheme://host:port as catalogued
    upstream_base: str  # the catalogued upstream path, ending in "/"
    prefix: str  # /apps/<slug>/
    portal_cookies: frozenset[str]

    def location(self, value: str) -> str:
        """A redirect target the browser can follow without leaving the portal's prefix."""
        parts = urlsplit(value)
        if parts.scheme or parts.netloc:
            origin = f"{parts.scheme or 'http'}://{parts.netloc}".lower()
            if origin != self.upstream_origin.lower():
                return value  # elsewhere: the browser's business, the portal never follows
        elif not parts.path.startswith("/"):
            return value  # relative: the browser resolves it inside the prefix already
        path = parts.path
        if path.startswith(self.upstream_base):
            path = self.prefix + path[len(self.upstream_base):]
        elif path + "/" == self.upstream_base:
            path = self.prefix
        else:
            path = self.prefix + path.lstrip("/")
        return path + (f"?{parts.query}" if parts.query else "") + (
            f"#{parts.fragment}" if parts.fragment else "")

    def set_cookie(self, value: str) -> str | None:
        """The Set-Cookie scoped to the prefix, or None when it must not reach the browser."""
        name = value.split("=", 1)[0].strip()
        if not name or name in self.portal_cookies or name.startswith("__Host-"):
            return None
        try:
            parsed = SimpleCookie()
            parsed.load(value.split(";", 1)[0])
        except CookieError:
            return None
        attrs = [a.strip() for a in value.split(";")[1:]]
        kept = [value.split(";", 1)[0].strip()]
        path = self.prefix
        for attr in attrs:
            key = attr.split("=", 1)[0].strip().lower()
            if key == "domain":
                continue  # a host-only cookie: the upstream's domain means nothing here
            if key == "path":
                upstream_path = attr.split("=", 1)[1].strip() if "=" in attr else "/"
                path = self.location(upstream_path or "/") if upstream_path.startswith("/") else self.prefix
                continue
            if attr:
                kept.append(attr)
        if not path.startswith(self.prefix):
            path = self.prefix
        kept.insert(1, f"Path={path}")
        return "; ".join(kept)


_HOP_BY_HOP_BYTES = frozenset(n.encode() for n in HOP_BY_HOP)
_RESPONSE_DROP_BYTES = frozenset(n.encode() for n in _RESPONSE_DROP)
_REWRITTEN = frozenset({b"location", b"content-location", b"set-cookie", b"refresh"})


def response_headers(headers: Iterable[tuple[bytes, bytes]], rewrite: ResponseRewrite,
                     *, keep_upgrade: bool = False) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers as the browser may see them."""
    named_by_connection: set[bytes] = set()
    headers = list(headers)
    for name, value in headers:
        if name.lower() == b"connection":
            named_by_connection.update(t.strip().lower() for t in value.split(b","))
    hop = _HOP_BY_HOP_BYTES - {b"upgrade"} if keep_upgrade else _HOP_BY_HOP_BYTES
    out: list[tuple[bytes, bytes]] = []
    for raw_name, raw_value in headers:
        lowered = raw_name.lower()
        if lowered in hop or lowered in named_by_connection or lowered in _RESPONSE_DROP_BYTES:
            continue
        if lowered not in _REWRITTEN:
            out.append((lowered, raw_value))  # passed on as it came (most headers)
            continue
        name = lowered.decode("latin-1")
        value = raw_value.decode("latin-1")
        if name in ("location", "content-location"):
            value = rewrite.location(value)
        elif name == "set-cookie":
            rewritten = rewrite.set_cookie(value)
            if rewritten is None:
                continue
            value = rewritten
        elif name == "refresh" and "url=" in value.lower():
            index = value.lower().find("url=")
            value = value[: index + 4] + rewrite.location(value[index + 4:].strip())
        out.append((name.encode("latin-1"), value.encode("latin-1")))
    return out


def same_origin(origin: str | None, fetch_site: str | None, *, scheme: str, host: str) -> bool:
    """True unless the browser says an unsafe request comes from another site.

    Fetch Metadata first (``Sec-Fetch-Site``: browsers send it even when a page's referrer
    policy turns ``Origin`` into ``null``); else ``Origin``. Neither (a non-browser
    client) counts as same-site: the session cookie is SameSite=Lax anyway.
    """
    if fetch_site is not None:
        return fetch_site.strip().lower() in ("same-origin", "none")
    if origin is None:
        return True
    return origin.lower() == f"{scheme}://{host}".lower()
