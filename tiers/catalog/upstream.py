"""Whether an upstream can serve a resource of its kind: a web app's URL, a desktop's host:port."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from tiers.models import ResourceKind

__all__ = ["upstream_problem"]

_HOST_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def upstream_problem(kind: str, upstream: str) -> str | None:
    """Why ``upstream`` cannot serve a resource of ``kind``, or None when it can."""
    if not upstream or any(c.isspace() for c in upstream):
        return "must not be empty or contain spaces"
    if kind == ResourceKind.WEB:
        try:
            parts = urlsplit(upstream)
        except ValueError:
            return f"not a valid URL: {upstream!r}"
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return f"a web upstream must be an http:// or https:// URL, got {upstream!r}"
        if parts.username is not None or parts.password is not None:
            return "must not carry credentials (they would end up in git)"
        if not parts.hostname:
            return f"has no host: {upstream!r}"
        try:
            parts.port  # noqa: B018 - urlsplit checks the port only when asked
        except ValueError:
            return f"has an invalid port: {upstream!r}"
        if parts.fragment:
            return "must not have a #fragment"
        if ":" not in parts.hostname:
            return _host_problem(parts.hostname)
        try:
            ipaddress.IPv6Address(parts.hostname)
        except ValueError:
            return f"not a valid IPv6 address: {parts.hostname!r}"
        return None
    if "://" in upstream:
        return f"a {kind} upstream is host:port, not a URL (got {upstream!r})"
    if upstream.startswith("["):
        host, sep, port = upstream[1:].partition("]:")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"expected [IPv6 address]:port, got {upstream!r}"
    else:
        host, sep, port = upstream.rpartition(":")
        if not sep or not host:
            return f"expected host:port (e.g. desktop.internal:5901), got {upstream!r}"
        if ":" in host:
            return f"put an IPv6 address in brackets, e.g. [::1]:{port or 5901}"
        if problem := _host_problem(host):
            return problem
    if not sep or not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
        return f"port must be a number from 1 to 65535, got {port!r}"
    return None


def _host_problem(host: str) -> str | None:
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"not a valid IPv4 address: {host!r}"
        return None
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return f"not a valid host name: {host!r}"
    return None
