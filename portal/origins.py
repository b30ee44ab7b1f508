"""Is a request's ``Origin`` the portal's own? One exact comparison for every WebSocket.

A browser sends ``Origin`` on every WebSocket handshake, and cookies ride along whatever
page opened it (cross-site WebSocket hijacking). Comparing the host alone lets
``http://portal`` (a network attacker's injection target) or ``https://portal:8443``
(another service on the same name) speak as the portal's own page, so scheme, host and port
must all be equal. Pure: no settings, no I/O.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["origin_matches"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# The portal's own scheme may be given as the WebSocket scope says it (ws/wss).
_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


def _host_and_port(netloc: str, scheme: str) -> tuple[str, int] | None:
    """``host[:port]`` (IPv6 in brackets) as lower-case host and port; None when malformed."""
    netloc = netloc.strip().lower()
    if not netloc or any(c in netloc for c in "/@?#\\ "):
        return None
    if netloc.startswith("["):
        end = netloc.find("]")
        if end == -1:
            return None
        host, rest = netloc[:end + 1], netloc[end + 1:]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = netloc.partition(":")
        if ":" in port_text:
            return None
    if not host or host == "[]":
        return None
    if not port_text:
        if netloc.endswith(":"):
            return None
        return host, _DEFAULT_PORTS[scheme]
    if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5:
        return None
    port = int(port_text)
    return (host, port) if 0 < port < 65536 else None


def origin_matches(origin: str | None, *, scheme: str, host: str) -> bool:
    """True only when ``origin`` is exactly the portal's origin ``scheme://host``.

    ``host`` is the portal's Host header (port included when not the default); default
    ports are normalised on both sides (``https://p`` equals ``https://p:443``). A missing
    Origin, ``null``, a path, user info or an unknown scheme never match.
    """
    own_scheme = _SCHEMES.get(scheme.strip().lower())
    if origin is None or own_scheme is None:
        return False
    origin = origin.strip()
    if not origin or origin.lower() == "null" or not origin.isascii():
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    their_scheme = parts.scheme.lower()
    if their_scheme not in _DEFAULT_PORTS or parts.path or parts.query or parts.fragment:
        return False
    if origin[len(parts.scheme):len(parts.scheme) + 3] != "://":
        return False
    theirs = _host_and_port(parts.netloc, their_scheme)
    ours = _host_and_port(host, own_scheme)
    return theirs is not None and ours is not None and their_scheme == own_scheme and theirs == ours
