"""The life of a stream session, as plain functions: open, redeem the ticket, go live, end.

Views and the tunnel consumer only translate and call these. Each end is written to the
session row and to the audit chain with who ended it and why.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
import socket
import ssl
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from portal.audit.chain import record
from portal.broadcast import broadcast
from streaming.desktop import groups
from streaming.desktop.guacamole.guacd import tls_context
from streaming.desktop.models import EndReason, StreamSession, StreamWatch
from streaming.desktop.parameters import connection_parameters
from streaming.desktop.vault import TargetSecret, secret_for
from streaming.isolation import pool
from streaming.isolation.launches import is_slot_backed, slot_launch

__all__ = [
    "TicketError",
    "check_guacd",
    "end_session",
    "end_watch",
    "guacd_tls",
    "handshake_parameters",
    "issue_session",
    "issue_watch",
    "kill_session",
    "mark_live",
    "mark_watching",
    "push",
    "redeem_ticket",
    "redeem_watch_ticket",
]

log = structlog.get_logger(__name__)


class TicketError(PermissionError):
    """The tunnel ticket is unknown, used, expired or someone else's (message for the user)."""


_tls_contexts: dict[str, ssl.SSLContext] = {}


def guacd_tls() -> ssl.SSLContext | None:
    """The TLS context for guacd when ``GUACD_TLS`` is on (principle 3: encryption on every
    channel, the portal-guacd hop included), else None. Built once per CA file."""
    if not settings.GUACD_TLS:
        return None
    key = str(settings.GUACD_CA_FILE or "")
    context = _tls_contexts.get(key)
    if context is None:
        context = _tls_contexts[key] = tls_context(settings.GUACD_CA_FILE)
    return context


def check_guacd() -> None:
    """Readiness: guacd accepts connections (and, with ``GUACD_TLS``, a verified TLS handshake)."""
    with socket.create_connection((settings.GUACD_HOST, settings.GUACD_PORT), timeout=2) as sock:
        context = guacd_tls()
        if context is not None:
            with context.wrap_socket(sock, server_hostname=settings.GUACD_HOST):
                pass


def _hash(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def issue_session(user: AbstractBaseUser, resource: Any, obligations: dict[str, Any],
                  client_address: str) -> tuple[StreamSession, str]:
    """A pending session and its one-time ticket (the only copy of it leaves with the page)."""
    ticket = secrets.token_urlsafe(32)
    session = StreamSession.objects.create(
        user=user, resource=resource, tier_name=resource.tier.name, obligations=dict(obligations),
        client_address=client_address, ticket_hash=_hash(ticket),
        ticket_expires_at=timezone.now() + timedelta(seconds=settings.PORTAL_DESKTOP_TICKET_SECONDS),
    )
    return session, ticket


def redeem_ticket(session_id: str, user: AbstractBaseUser, ticket: str) -> StreamSession:
    """Use the ticket once: it must match this session and user, and not be expired."""
    try:
        pk = uuid.UUID(session_id)
    except ValueError as exc:
        raise TicketError("This desktop link is not valid.") from exc
    now = timezone.now()
    used = StreamSession.objects.filter(
        pk=pk, user_id=user.pk, state=StreamSession.State.PENDING, ticket_hash=_hash(ticket or ""),
        ticket_expires_at__gt=now,
    ).update(ticket_hash="", started_at=now)
    if not used:
        raise TicketError("This desktop link has expired or was already used. "
                          "Open the desktop again from My apps.")
    return StreamSession.objects.select_related("resource", "user").get(pk=pk)


def handshake_parameters(session: StreamSession, *, portal_session_key: str | None = None,
                         host_header: str = "", server: tuple[str, int] | None = None) -> dict[str, str]:
    """guacd parameters for ``session``, with the target login opened from the vault, or, for
    a slot-backed resource, a disposable slot taken for this session alone (its VNC password
    from the pool). Raises :class:`pool.NoSlotFree` when every slot is taken."""
    resource = session.resource
    launch = slot_launch(resource, user_id=session.user_id, portal_session_key=portal_session_key,
                         host_header=host_header, server=server)
    if launch is not None:
        lease = pool.acquire(str(session.pk), launch)
        return connection_parameters(
            "vnc", f"{lease.address}:{lease.port}", session.obligations,
            TargetSecret(password=lease.password), session_id=str(session.pk),
            recordings_dir=Path(settings.PORTAL_RECORDINGS_DIR))
    return connection_parameters(
        resource.kind, resource.upstream, session.obligations, secret_for(resource.pk),
        session_id=str(session.pk), recordings_dir=Path(settings.PORTAL_RECORDINGS_DIR),
    )


def guacd_protocol(resource: Any) -> str:
    """What guacd speaks to the session's target: a slot is always VNC."""
    return "vnc" if is_slot_backed(resource) else resource.kind


def mark_live(session: StreamSession, connection_id: str) -> None:
    recording = Path(settings.PORTAL_RECORDINGS_DIR) / str(session.pk)
    fields: dict[str, Any] = {"state": StreamSession.State.LIVE, "guacd_connection_id": connection_id}
    if session.obligations.get("record"):
        fields["recording_path"] = str(recording)
        if session.resource.kind == "ssh":
            fields["typescript_path"] = str(recording.with_name(f"{session.pk}.typescript"))
    StreamSession.objects.filter(pk=session.pk).update(**fields)
    record("desktop.start", outcome="success", actor=session.user.get_username(),
           resource=session.resource.slug, client_address=session.client_address,
           detail={"session": str(session.pk), "guacd_connection": connection_id,
                   "tier": session.tier_name, "obligations": session.obligations})


def end_session(session_id: uuid.UUID | str, reason: EndReason, message: str, *, ended_by: str,
                bytes_to_browser: int = 0, bytes_from_browser: int = 0) -> bool:
    """Close the row (once) and audit who ended it and why; start the recording digest."""
    with transaction.atomic():
        session = (StreamSession.objects.select_for_update().select_related("resource", "user")
                   .filter(pk=session_id).first())
        if session is None or session.state == StreamSession.State.ENDED:
            return False
        session.state = StreamSession.State.ENDED
        session.ended_at = timezone.now()
        session.end_reason = reason
        session.end_message = message[:300]
        session.ended_by = ended_by[:150]
        session.bytes_to_browser = bytes_to_browser
        session.bytes_from_browser = bytes_from_browser
        session.save()
        # A slot-backed session's slot goes back to its host, to be wiped and made anew.
        transaction.on_commit(functools.partial(pool.release, str(session.pk)))
        record("desktop.end", outcome=str(reason), actor=ended_by,
               resource=session.resource.slug, client_address=session.client_address,
               reasons=[{"rule": str(reason), "message": message}],
               detail={"session": str(session.pk), "user": session.user.get_username(),
                       "bytes_to_browser": bytes_to_browser, "bytes_from_browser": bytes_from_browser,
                       "duration_seconds": int((session.ended_at - (session.started_at or session.created_at))
                                               .total_seconds())})
        # Admins watching it lose their view too, whatever ended it (a lock is pushed to the
        # user's group, which a watcher is not in).
        transaction.on_commit(functools.partial(
            push, groups.for_session(session.pk),
            {"type": "desktop.watched_ended", "message": message[:300], "by": ended_by[:150]}))
        if session.recording_path:
            from streaming.desktop.tasks import schedule_digest

            transaction.on_commit(functools.partial(schedule_digest, str(session.pk)))
    return True


def push(group: str, message: dict[str, Any]) -> None:
    """Send ``message`` to every live session consumer in ``group``.

    Callable from sync code in any thread, even one that runs an event loop. A failed push
    is logged, not raised: the change itself must not fail, and the periodic re-check still
    catches it within the tier's interval.
    """
    broadcast(group, message)




def kill_session(session: StreamSession, admin: AbstractBaseUser, client_address: str = "") -> None:
    """An admin ends a live session: audited, then pushed to the consumer that holds it."""
    record("desktop.kill", outcome="success", actor=admin.get_username(), resource=session.resource.slug,
           client_address=client_address,
           detail={"session": str(session.pk), "user": session.user.get_username()})
    push(groups.for_session(session.pk), {"type": "desktop.kill", "by": admin.get_username()})


# -- an admin's read-only view of a live session ---------------------------------------------


def issue_watch(stream: StreamSession, watcher: AbstractBaseUser,
                client_address: str) -> tuple[StreamWatch, str]:
    """A one-time ticket for ``watcher`` to join ``stream`` read-only (the caller checked the
    permission; the ticket is bound to both)."""
    ticket = secrets.token_urlsafe(32)
    watch = StreamWatch.objects.create(
        stream=stream, watcher=watcher, client_address=client_address, ticket_hash=_hash(ticket),
        ticket_expires_at=timezone.now() + timedelta(seconds=settings.PORTAL_DESKTOP_TICKET_SECONDS),
    )
    return watch, ticket


def redeem_watch_ticket(watch_id: str, watcher: AbstractBaseUser, ticket: str) -> StreamWatch:
    """Use the watch ticket once; the watcher must still manage sessions and the session be live."""
    try:
        pk = uuid.UUID(watch_id)
    except ValueError as exc:
        raise TicketError("This watch link is not valid.") from exc
    if not watcher.has_perm("accounts.manage_sessions"):
        raise TicketError("Watching sessions is for administrators.")
    now = timezone.now()
    used = StreamWatch.objects.filter(
        pk=pk, watcher_id=watcher.pk, started_at__isnull=True, ticket_hash=_hash(ticket or ""),
        ticket_expires_at__gt=now, stream__state=StreamSession.State.LIVE,
    ).exclude(stream__guacd_connection_id="").update(ticket_hash="", started_at=now)
    if not used:
        raise TicketError("This watch link has expired or was already used, or the session has ended. "
                          "Open it again from the live sessions page.")
    return StreamWatch.objects.select_related("stream__resource", "stream__user", "watcher").get(pk=pk)


def mark_watching(watch: StreamWatch, connection_id: str) -> None:
    stream = watch.stream
    record("desktop.watch", outcome="start", actor=watch.watcher.get_username(),
           resource=stream.resource.slug, client_address=watch.client_address,
           detail={"watch": str(watch.pk), "session": str(stream.pk), "user": stream.user.get_username(),
                   "guacd_connection": stream.guacd_connection_id, "watcher_connection": connection_id,
                   "read_only": True})


def end_watch(watch_id: uuid.UUID | str, message: str, *, ended_by: str, refused_input: int = 0,
              bytes_to_browser: int = 0) -> bool:
    """Close the watch (once) and audit it; the watched session goes on."""
    with transaction.atomic():
        watch = (StreamWatch.objects.select_for_update().select_related("stream__resource", "stream__user",
                                                                        "watcher")
                 .filter(pk=watch_id, ended_at__isnull=True).first())
        if watch is None:
            return False
        watch.ended_at = timezone.now()
        watch.end_message = message[:300]
        watch.save(update_fields=["ended_at", "end_message"])
        stream = watch.stream
        record("desktop.watch", outcome="end", actor=ended_by[:150], resource=stream.resource.slug,
               client_address=watch.client_address, reasons=[{"rule": "watch_end", "message": message}],
               detail={"watch": str(watch.pk), "session": str(stream.pk), "user": stream.user.get_username(),
                       "watcher": watch.watcher.get_username(), "refused_input": refused_input,
                       "bytes_to_browser": bytes_to_browser,
                       "duration_seconds": int((watch.ended_at - (watch.started_at or watch.created_at))
                                               .total_seconds())})
    return True
