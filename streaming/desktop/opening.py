"""What opening a desktop tunnel takes before the relay starts, and how it reads the browser.

The WebSocket handshake must come from the portal's own origin (no cross-site WebSocket
hijacking), ask for the ``guacamole`` subprotocol and carry a signed-in session with a
confirmed second factor; :func:`read_opening` says so, or None. The ticket then names the
session (or, for an admin's read-only view, the watch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings
from django_otp import DEVICE_ID_SESSION_KEY

from portal.network import is_trusted, resolve_client_address
from portal.origins import origin_matches
from streaming.desktop import broker
from streaming.desktop.guacamole.guacd import Screen
from streaming.desktop.models import StreamSession, StreamWatch
from streaming.desktop.signins import SIGN_IN_KEY

__all__ = ["Opening", "read_opening", "redeem", "status_values"]


@dataclass(frozen=True)
class Opening:
    """A tunnel request that passed the handshake's checks: who, from where, for what."""

    user: Any
    session_key: str
    sign_in: str  # survives a step-up's new session key
    client_address: str
    host: str
    screen: Screen
    ticket: str
    session_id: str
    watch_id: str | None  # an admin's read-only view of a running session

    @property
    def tunnel_id(self) -> str:
        """The id the browser's tunnel is told first (36 characters, as guacamole-common-js wants)."""
        shown = self.watch_id or self.session_id
        return shown if len(shown) == 36 else "0" * 36


def _bounded(value: str | None, default: int, lo: int, hi: int) -> int:
    try:
        return min(hi, max(lo, int(value or default)))
    except ValueError:
        return default


def _from_own_origin(headers: dict[bytes, bytes], peer: str, scope_scheme: str) -> bool:
    """The handshake's Origin is exactly the portal's (scheme from a trusted proxy if one says)."""
    scheme = "https" if scope_scheme in ("wss", "https") else "http"
    proto = headers.get(b"x-forwarded-proto")
    if proto is not None and is_trusted(peer, settings.PORTAL_TRUSTED_PROXIES):
        scheme = proto.decode("latin-1").split(",")[0].strip().lower()
    origin = headers.get(b"origin")
    return origin_matches(origin.decode("latin-1") if origin is not None else None, scheme=scheme,
                          host=headers.get(b"host", b"").decode("latin-1"))


def read_opening(scope: dict[str, Any]) -> Opening | None:
    """The checked request, or None to refuse the handshake (reads the session: run in a thread)."""
    user, session = scope.get("user"), scope.get("session")
    headers = dict(scope.get("headers", []))
    peer = (scope.get("client") or ("", 0))[0]
    if not _from_own_origin(headers, peer, scope.get("scheme", "ws")):
        return None
    if ("guacamole" not in scope.get("subprotocols", []) or user is None or not user.is_authenticated
            or session is None or not session.get(DEVICE_ID_SESSION_KEY)):
        return None
    query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1"),
                                          max_num_fields=8).items()}
    kwargs = scope["url_route"]["kwargs"]
    watch_id = kwargs.get("watch_id")
    xff = headers.get(b"x-forwarded-for", b"").decode("latin-1") or None
    return Opening(
        user=user, session_key=session.session_key, sign_in=str(session.get(SIGN_IN_KEY) or ""),
        client_address=resolve_client_address(peer, xff, settings.PORTAL_TRUSTED_PROXIES),
        host=headers.get(b"host", b"").decode("latin-1"),
        screen=Screen(_bounded(query.get("width"), 1024, 320, 4096),
                      _bounded(query.get("height"), 768, 240, 4096), _bounded(query.get("dpi"), 96, 48, 400)),
        ticket=query.get("ticket", ""), session_id=watch_id or kwargs.get("session_id", ""),
        watch_id=watch_id)


def redeem(opening: Opening) -> tuple[StreamSession, StreamWatch | None]:
    """Use the one-time ticket: the session to open, or the watch and the session it views.

    Raises :class:`broker.TicketError` (with a sentence for the person) when it is not good.
    """
    if opening.watch_id is not None:
        watch = broker.redeem_watch_ticket(opening.watch_id, opening.user, opening.ticket)
        return watch.stream, watch
    return broker.redeem_ticket(opening.session_id, opening.user, opening.ticket), None


def status_values(opening: Opening, stream: StreamSession, watch: StreamWatch | None,
                  obligations: dict[str, Any], ends_in: int, idle_seconds: int) -> dict[str, Any]:
    """What the page's status bar shows once the desktop is up (resource, limits, watermark)."""
    watermark = f"{opening.user.get_username()} · {opening.client_address}"
    return {"resource": stream.resource.name, "tier": stream.tier_name, "ends_in": ends_in,
            "idle_seconds": idle_seconds, "watermark": watermark if obligations.get("watermark") else "",
            "read_only": bool(obligations.get("read_only")),
            "watching": stream.user.get_username() if watch else ""}
