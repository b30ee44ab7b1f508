"""Appending to and verifying the audit chain.

Appends are serialised by updating the single :class:`ChainHead` row first: that takes a
row lock on PostgreSQL and the write lock on SQLite, so two appends can never fork the chain.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from portal.audit.models import AuditEvent, ChainHead

__all__ = ["GENESIS", "ChainReport", "canonical_content", "event_hash", "record", "verify_chain"]

GENESIS = "0" * 64


def canonical_content(
    *, seq: int, time: datetime, actor: str, action: str, resource: str, outcome: str,
    reasons: Any, client_address: str, zone: str, device: str, request_id: str, detail: Any,
) -> str:
    """The event as one deterministic JSON string: what the hash covers."""
    return json.dumps(
        {
            "seq": seq, "time": time.isoformat(timespec="microseconds"), "actor": actor,
            "action": action, "resource": resource, "outcome": outcome, "reasons": reasons,
            "client_address": client_address, "zone": zone, "device": device,
            "request_id": request_id, "detail": detail,
        },
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str,
    )


def event_hash(prev_hash: str, content: str) -> str:
    """SHA-256 over the previous hash and this event's canonical content."""
    return hashlib.sha256(f"{prev_hash}\n{content}".encode()).hexdigest()


def _normalise(value: Any) -> Any:
    # Round-trip through JSON so what we hash equals what the database hands back later.
    return json.loads(json.dumps(value, default=str))


def record(
    action: str, *, outcome: str, actor: str = "", resource: str = "", reasons: Any = None,
    client_address: str = "", zone: str = "", device: str = "", request_id: str = "",
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain and return it."""
    reasons = _normalise(reasons or [])
    detail = _normalise(detail or {})
    now = timezone.now()
    with transaction.atomic():
        updated = ChainHead.objects.filter(pk=1).update(seq=F("seq") + 1)
        if not updated:
            ChainHead.objects.get_or_create(pk=1)
            ChainHead.objects.filter(pk=1).update(seq=F("seq") + 1)
        head = ChainHead.objects.select_for_update().get(pk=1)
        fields = dict(
            seq=head.seq, time=now, actor=actor[:150], action=action, resource=resource,
            outcome=outcome, reasons=reasons, client_address=client_address, zone=zone,
            device=device, request_id=request_id, detail=detail,
        )
        digest = event_hash(head.hash, canonical_content(**fields))
        event = AuditEvent.objects.create(prev_hash=head.hash, hash=digest, **fields)
        ChainHead.objects.filter(pk=1).update(hash=digest)
    return event


def record_request(request: Any, action: str, *, outcome: str, **kwargs: Any) -> AuditEvent:
    """:func:`record` with actor, client address and request id taken from ``request``."""
    user = getattr(request, "user", None)
    actor = kwargs.pop("actor", None)
    if actor is None:
        actor = user.get_username() if user is not None and user.is_authenticated else ""
    return record(
        action, outcome=outcome, actor=actor,
        client_address=getattr(request, "client_address", request.META.get("REMOTE_ADDR", "")),
        request_id=getattr(request, "request_id", ""), **kwargs,
    )


@dataclass
class ChainReport:
    """What verification found: ``ok`` only when every link and every hash holds."""

    checked: int = 0
    head_seq: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(batch_size: int = 2000) -> ChainReport:
    """Walk the whole chain in order and report every break."""
    report = ChainReport()
    head = ChainHead.objects.filter(pk=1).first()
    expected_seq, prev = 1, GENESIS
    events = AuditEvent.objects.order_by("seq").iterator(chunk_size=batch_size)
    for event in events:
        report.checked += 1
        if event.seq != expected_seq:
            if event.seq > expected_seq:
                report.problems.append(
                    f"events #{expected_seq}..#{event.seq - 1} are missing (deleted)"
                )
            else:
                report.problems.append(f"event #{event.seq} is out of sequence (inserted)")
        if event.prev_hash != prev:
            report.problems.append(
                f"event #{event.seq} does not link to the event before it (inserted or reordered)"
            )
        content = canonical_content(
            seq=event.seq, time=event.time, actor=event.actor, action=event.action,
            resource=event.resource, outcome=event.outcome, reasons=event.reasons,
            client_address=event.client_address, zone=event.zone, device=event.device,
            request_id=event.request_id, detail=event.detail,
        )
        if event_hash(event.prev_hash, content) != event.hash:
            report.problems.append(f"event #{event.seq} was changed after it was written")
        prev = event.hash
        expected_seq = event.seq + 1
    report.head_seq = head.seq if head else 0
    if head is not None and (head.seq != expected_seq - 1 or head.hash != prev):
        if head.seq > expected_seq - 1:
            report.problems.append(
                f"events #{expected_seq}..#{head.seq} at the end of the chain are missing (deleted)"
            )
        else:
            report.problems.append("the chain head does not match the last event (tampered)")
    return report
