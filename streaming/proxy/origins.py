"""One origin per web app (pure): which app a Host header names, and where each origin is.

In host mode every web resource is served on ``https://<slug>.<PORTAL_APPS_DOMAIN>``, so a
script in a low-risk app runs with that app's origin and can never read or drive the
portal's pages (docs/decisions/0019-one-origin-per-app.md). The portal's own origin never
serves an app's bytes: ``/apps/<slug>/...`` there only redirects to the app's origin.
"""

from __future__ import annotations

import re

from streaming.proxy.paths import SLUG

__all__ = ["RESERVED_PREFIX", "app_origin", "app_slug_for_host", "split_host"]

# Paths on an app origin the portal answers itself and never forwards (Pomerium: /.pomerium/).
RESERVED_PREFIX = "/.portal/"
_PORT = re.compile(r"^[0-9]{1,5}$")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def split_host(host: str) -> tuple[str, str]:
    """(lower-case domain without a trailing dot, port or "") of a Host header; ("", "") when
    it is not a plain ``name[:port]`` (IPv6 literals and user info never name an app)."""
    host = host.strip().lower()
    domain, sep, port = host.rpartition(":")
    if not sep:
        domain, port = host, ""
    if port and not _PORT.match(port):
        return "", ""
    domain = domain.removesuffix(".")
    if not domain or "[" in domain or "@" in domain:
        return "", ""
    return domain, port


def app_slug_for_host(host: str, apps_domain: str) -> str | None:
    """The slug of the app whose origin ``host`` is, or None when it is no app's origin.

    Only one label under the apps domain counts: ``a.b.apps.example`` is nobody's.
    """
    if not apps_domain:
        return None
    domain, _port = split_host(host)
    suffix = "." + apps_domain.lower().removesuffix(".")
    if not domain.endswith(suffix):
        return None
    slug = domain[: -len(suffix)]
    return slug if SLUG.match(slug) else None


def app_origin(slug: str, apps_domain: str, *, scheme: str, port: str) -> str:
    """``scheme://<slug>.<apps_domain>[:port]``: the port the portal itself was reached on
    (one listener serves the portal and every app origin), left out when it is the default."""
    suffix = f":{port}" if port and port != _DEFAULT_PORTS.get(scheme) else ""
    return f"{scheme}://{slug}.{apps_domain.removesuffix('.')}{suffix}"
