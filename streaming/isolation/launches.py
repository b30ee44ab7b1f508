"""What a session runs in its slot (portal side): a desktop image, or the user's isolated browser.

A resource is slot-backed when it names a desktop image (:class:`IsolatedDesktop`) or when it
is a web app whose tier streams it. The isolated browser starts at the app's own origin with
a one-time code that opens an app session marked isolated, bound to the user's portal session:
every request it makes is still decided by the proxy, as that user, and the app still gets a
fresh assertion naming them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.conf import settings

from streaming.isolation.models import IsolatedDesktop
from streaming.proxy.handoff import issue_isolation_code
from streaming.proxy.origins import RESERVED_PREFIX, app_origin, split_host

__all__ = ["IsolationUnavailable", "is_slot_backed", "slot_launch"]


class IsolationUnavailable(RuntimeError):
    """This deployment cannot isolate the resource (e.g. web apps without app origins)."""


def is_slot_backed(resource: Any) -> bool:
    """Whether sessions of ``resource`` run in a disposable slot rather than on a fixed host."""
    if resource.kind == "web":
        return True  # only ever opened as pixels when its tier streams it
    return IsolatedDesktop.objects.filter(resource_id=resource.pk).exists()


def slot_launch(resource: Any, *, user_id: int, portal_session_key: str | None, host_header: str,
                server: tuple[str, int] | None) -> dict[str, Any] | None:
    """The launch for ``resource``'s slot, or None when it runs on a fixed host."""
    image = IsolatedDesktop.objects.filter(resource_id=resource.pk).values_list("image", flat=True).first()
    if image:
        return {"kind": "image", "image": image}
    if resource.kind != "web":
        return None
    domain = settings.PORTAL_APPS_DOMAIN
    if not domain or not portal_session_key or server is None:
        raise IsolationUnavailable("isolated browsers need app origins (PORTAL_APPS_DOMAIN)")
    _domain, port = split_host(host_header)
    origin = app_origin(resource.slug, domain, scheme="https", port=port)
    code = issue_isolation_code(session_key=portal_session_key, user_id=user_id, slug=resource.slug)
    connect_host = "127.0.0.1" if server[0] in ("0.0.0.0", "::", "") else server[0]  # noqa: S104
    return {
        "kind": "browser",
        "url": f"{origin}{RESERVED_PREFIX}isolated?{urlencode({'code': code})}",
        "authority": f"{resource.slug}.{domain}:{port or 443}",
        "connect": f"{connect_host}:{server[1]}",
    }
