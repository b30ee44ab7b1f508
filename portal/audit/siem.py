"""Forwarding the audit trail to a SIEM: an HTTP webhook and/or syslog.

Each destination has a :class:`~portal.audit.models.SiemCursor`: the last sequence number
it took. A run sends the events after the cursor in batches and moves the cursor only
after the destination accepted a batch, so nothing written while the receiver is down is
lost; it goes out when the receiver is back. Delivery is at-least-once (a run that dies
between sending and moving the cursor sends that batch again): receivers deduplicate on
``metadata.uid``, the event's chain hash. Records are the same OCSF records as the exports.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from portal.audit.models import AuditEvent, SiemCursor
from portal.audit.ocsf import ocsf_event

__all__ = [
    "Destination", "ForwardResult", "SiemUnavailable", "SyslogDestination", "WebhookDestination",
    "configured_destinations", "forward_all", "forward_pending",
]

# A syslog datagram above this is refused by most stacks and receivers: such a record is
# sent without its free-form parts (marked truncated) rather than blocking the cursor.
_SYSLOG_MAX_BYTES = 8192


class SiemUnavailable(RuntimeError):
    """The destination did not take the batch; the cursor stays where it was."""


class Destination(Protocol):
    name: str

    def send(self, events: Sequence[AuditEvent]) -> None: ...


def _line(event: AuditEvent) -> str:
    return json.dumps(ocsf_event(event), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)


class WebhookDestination:
    """POSTs a batch as JSON Lines (``application/x-ndjson``); any 2xx means taken."""

    name = "webhook"

    def __init__(self, url: str, token: str | None = None, timeout: float = 10.0) -> None:
        self.url, self.token, self.timeout = url, token, timeout

    def send(self, events: Sequence[AuditEvent]) -> None:
        body = "".join(_line(e) + "\n" for e in events).encode()
        headers = {"Content-Type": "application/x-ndjson",
                   "X-Portal-Audit-Range": f"{events[0].seq}-{events[-1].seq}"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            # Redirects are not followed: the events go where the operator said, nowhere else.
            response = httpx.post(self.url, content=body, headers=headers, timeout=self.timeout,
                                  follow_redirects=False)
        except httpx.HTTPError as exc:
            raise SiemUnavailable(f"webhook unreachable: {type(exc).__name__}") from exc
        if not response.is_success:
            raise SiemUnavailable(f"webhook answered HTTP {response.status_code}")


class _SyslogSender(logging.handlers.SysLogHandler):
    """SysLogHandler that connects with a timeout and lets send errors propagate.

    The stock handler swallows send errors (``handleError`` prints them); the cursor must
    not move past events that were not sent.
    """

    def __init__(self, host: str, port: int, *, tcp: bool, timeout: float) -> None:
        self.timeout = timeout
        self.severity = "info"
        super().__init__(address=(host, port), facility=logging.handlers.SysLogHandler.LOG_AUTHPRIV,
                         socktype=socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
        self.ident = "zt-portal-audit: "
        # TCP: one message a line (RFC 6587 non-transparent framing), not NUL-terminated.
        self.append_nul = not tcp

    def createSocket(self) -> None:
        host, port = self.address
        self.unixsocket = False
        if self.socktype == socket.SOCK_STREAM:
            self.socket = socket.create_connection((host, port), timeout=self.timeout)
        else:
            family = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0][0]
            self.socket = socket.socket(family, socket.SOCK_DGRAM)

    def mapPriority(self, levelName: str) -> str:
        return self.severity

    def handleError(self, record: logging.LogRecord) -> None:
        raise


class SyslogDestination:
    """One syslog message per event (facility authpriv), over UDP or TCP.

    UDP cannot tell whether the receiver got a datagram: it is for receivers that are
    "good enough"; use ``tcp://`` (or the webhook) when nothing may be lost.
    """

    name = "syslog"

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        parts = urlsplit(address)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 514
        self.tcp = parts.scheme == "tcp"
        self.timeout = timeout

    def send(self, events: Sequence[AuditEvent]) -> None:
        try:
            sender = _SyslogSender(self.host, self.port, tcp=self.tcp, timeout=self.timeout)
        except OSError as exc:
            raise SiemUnavailable(f"syslog unreachable: {exc.strerror or type(exc).__name__}") from exc
        try:
            for event in events:
                message = _line(event)
                if len(message.encode()) > _SYSLOG_MAX_BYTES:
                    record = ocsf_event(event)
                    record["unmapped"] = {"truncated": True, "hash": event.hash}
                    message = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
                sender.severity = "warning" if event.outcome in {"deny", "failure", "alert"} else "info"
                sender.emit(logging.LogRecord("portal.audit", logging.INFO, __file__, 0,
                                              message + ("\n" if self.tcp else ""), None, None))
        except OSError as exc:
            raise SiemUnavailable(f"syslog send failed: {exc.strerror or type(exc).__name__}") from exc
        finally:
            sender.close()


def configured_destinations() -> list[Destination]:
    """The destinations the settings name (read when called, so tests can override them)."""
    timeout = settings.PORTAL_SIEM_TIMEOUT_SECONDS
    found: list[Destination] = []
    if settings.PORTAL_SIEM_WEBHOOK_URL:
        found.append(WebhookDestination(settings.PORTAL_SIEM_WEBHOOK_URL,
                                        settings.PORTAL_SIEM_WEBHOOK_TOKEN, timeout))
    if settings.PORTAL_SIEM_SYSLOG:
        found.append(SyslogDestination(settings.PORTAL_SIEM_SYSLOG, timeout))
    return found


@dataclass(frozen=True)
class ForwardResult:
    """What one run did for one destination."""

    destination: str
    sent: int
    last_seq: int
    busy: bool = False  # another run held the destination; this one did nothing


def forward_pending(destination: Destination, *, batch_size: int | None = None,
                    max_batches: int | None = None) -> ForwardResult:
    """Send the events after the destination's cursor; move the cursor batch by batch.

    Raises :class:`SiemUnavailable` (after noting why on the cursor) when a batch is refused.
    """
    batch_size = batch_size or settings.PORTAL_SIEM_BATCH_SIZE
    max_batches = max_batches or settings.PORTAL_SIEM_MAX_BATCHES
    lock_key = f"audit:siem:{destination.name}:lock"
    token = secrets.token_hex(8)
    # One run per destination at a time (the cache is Redis when there are workers).
    lock_seconds = int(max_batches * (settings.PORTAL_SIEM_TIMEOUT_SECONDS + 5))
    if not cache.add(lock_key, token, lock_seconds):
        cursor = SiemCursor.objects.filter(destination=destination.name).first()
        return ForwardResult(destination.name, 0, cursor.last_seq if cursor else 0, busy=True)
    try:
        cursor, _ = SiemCursor.objects.get_or_create(destination=destination.name)
        sent = 0
        for _ in range(max_batches):
            events = list(AuditEvent.objects.filter(seq__gt=cursor.last_seq).order_by("seq")[:batch_size])
            if not events:
                break
            try:
                destination.send(events)
            except SiemUnavailable as exc:
                SiemCursor.objects.filter(pk=cursor.pk).update(
                    last_error=str(exc)[:300], last_error_at=timezone.now())
                raise
            moved = SiemCursor.objects.filter(pk=cursor.pk, last_seq=cursor.last_seq).update(
                last_seq=events[-1].seq, last_success_at=timezone.now(), last_error="")
            if not moved:  # someone else moved it (a lock that timed out): stop, don't fight
                break
            cursor.last_seq = events[-1].seq
            sent += len(events)
            if len(events) < batch_size:
                break
        return ForwardResult(destination.name, sent, cursor.last_seq)
    finally:
        if cache.get(lock_key) == token:
            cache.delete(lock_key)


def forward_all() -> list[ForwardResult]:
    """Forward to every configured destination; one being down does not hold up the others."""
    results, failures = [], []
    for destination in configured_destinations():
        try:
            results.append(forward_pending(destination))
        except SiemUnavailable as exc:
            failures.append(exc)
    if failures:
        raise failures[0]
    return results
