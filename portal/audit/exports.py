"""Audit events as OCSF-shaped records, and exports of a search as CSV or JSON Lines.

One mapping (:func:`ocsf_event`) serves the exports and the SIEM forwarder, so what an
auditor downloads and what the SIEM receives are the same records. Exports are generators
over ``.iterator(chunk_size=...)``: memory stays flat for a million rows. Every export is
pinned to the chain head at the moment it was asked for (``seq <= head``); the trail is
append-only, so the same filter and head always give the same rows and the same bytes,
which is what lets the manifest be recomputed and checked later. Fields: docs/audit-export.md.
"""

from __future__ import annotations

import csv
import hashlib
import io
import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from portal.audit.models import AuditEvent, ChainHead
from portal.audit.search import AuditFilter, filter_events

__all__ = [
    "CSV_COLUMNS", "OCSF_VERSION", "ChainHeadAt", "OcsfClass", "chain_head", "content_digest", "csv_lines",
    "export_events", "head_at", "jsonl_lines", "manifest", "ocsf_event", "register_action",
]

OCSF_VERSION = "1.1.0"
PRODUCT = {"name": "ZT Portal", "vendor_name": "ZT Portal"}


@dataclass(frozen=True)
class OcsfClass:
    """An OCSF event class and the category it belongs to."""

    uid: int
    name: str
    category_uid: int
    category_name: str


BASE_EVENT = OcsfClass(0, "Base Event", 0, "Uncategorized")
DETECTION_FINDING = OcsfClass(2004, "Detection Finding", 2, "Findings")
ACCOUNT_CHANGE = OcsfClass(3001, "Account Change", 3, "Identity & Access Management")
AUTHENTICATION = OcsfClass(3002, "Authentication", 3, "Identity & Access Management")
ENTITY_MANAGEMENT = OcsfClass(3004, "Entity Management", 3, "Identity & Access Management")
USER_ACCESS_MANAGEMENT = OcsfClass(3005, "User Access Management", 3, "Identity & Access Management")
API_ACTIVITY = OcsfClass(6003, "API Activity", 6, "Application Activity")
WEB_RESOURCE_ACCESS = OcsfClass(6004, "Web Resource Access Activity", 6, "Application Activity")

# Portal action -> (class, activity_id, activity_name). None as activity: from the outcome.
_ACTIONS: dict[str, tuple[OcsfClass, int | None, str]] = {
    "login.password": (AUTHENTICATION, 1, "Logon"),
    "mfa.verify": (AUTHENTICATION, 1, "Logon"),
    "mfa.step_up": (AUTHENTICATION, 1, "Logon"),
    "logout": (AUTHENTICATION, 2, "Logoff"),
    "mfa.enrol": (ACCOUNT_CHANGE, 10, "MFA Factor Enable"),
    "mfa.backup_codes": (ACCOUNT_CHANGE, 99, "Other"),
    "decision": (WEB_RESOURCE_ACCESS, None, ""),
    "access.approve": (USER_ACCESS_MANAGEMENT, 1, "Assign Privileges"),
    "access.revoke": (USER_ACCESS_MANAGEMENT, 2, "Revoke Privileges"),
    "access.expired": (USER_ACCESS_MANAGEMENT, 2, "Revoke Privileges"),
    "access.request": (USER_ACCESS_MANAGEMENT, 99, "Other"),
    "access.deny": (USER_ACCESS_MANAGEMENT, 99, "Other"),
    "access.cancel": (USER_ACCESS_MANAGEMENT, 99, "Other"),
    "catalog.apply": (ENTITY_MANAGEMENT, 3, "Update"),
    "catalog.retag": (ENTITY_MANAGEMENT, 3, "Update"),
    "tier.update": (ENTITY_MANAGEMENT, 3, "Update"),
    "admin.add": (ENTITY_MANAGEMENT, 1, "Create"),
    "admin.change": (ENTITY_MANAGEMENT, 3, "Update"),
    "admin.delete": (ENTITY_MANAGEMENT, 4, "Delete"),
    "simulator.run": (API_ACTIVITY, 99, "Other"),
    "audit.view": (API_ACTIVITY, 2, "Read"),
    "audit.export": (API_ACTIVITY, 2, "Read"),
    "audit.forbidden": (API_ACTIVITY, 2, "Read"),
    "audit.chain_broken": (DETECTION_FINDING, 1, "Create"),
}
# Access decisions (Web Resource Access Activity): the activity follows the outcome.
_DECISION_ACTIVITY = {
    "allow": (1, "Access Grant"), "isolate": (1, "Access Grant"), "deny": (2, "Access Deny"),
    "revoked": (3, "Access Revoke"), "error": (4, "Access Error"),
}
_STATUS = {
    "success": 1, "allow": 1, "isolate": 1, "expired": 1, "alert": 1,
    "failure": 2, "deny": 2, "throttled": 2, "step_up": 2, "error": 2, "revoked": 2, "refused": 2,
}
_STATUS_NAME = {0: "Unknown", 1: "Success", 2: "Failure", 99: "Other"}


def register_action(action: str, ocsf_class: OcsfClass, activity_id: int | None,
                    activity_name: str = "") -> None:
    """Let another part of the portal map its own action (e.g. ``desktop.open``) onto OCSF.

    ``activity_id=None`` derives the activity from the outcome like an access decision.
    """
    _ACTIONS[action] = (ocsf_class, activity_id, activity_name)


def _classify(action: str, outcome: str) -> tuple[OcsfClass, int, str]:
    ocsf_class, activity_id, activity_name = _ACTIONS.get(action, (BASE_EVENT, 99, "Other"))
    if activity_id is None:
        activity_id, activity_name = _DECISION_ACTIVITY.get(outcome, (99, "Other"))
    return ocsf_class, activity_id, activity_name


def _severity(action: str, outcome: str) -> int:
    if action == "audit.chain_broken":
        return 5  # Critical: the trail itself can no longer be trusted
    if action == "audit.forbidden":
        return 3  # Medium: someone probed the auditor's workspace
    if outcome in {"deny", "failure", "throttled"}:
        return 2  # Low
    return 1  # Informational


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def ocsf_event(event: AuditEvent) -> dict[str, Any]:
    """One audit event as an OCSF record (fields OCSF has no place for go to ``unmapped``)."""
    ocsf_class, activity_id, activity_name = _classify(event.action, event.outcome)
    status_id = _STATUS.get(event.outcome, 99)
    reasons = event.reasons if isinstance(event.reasons, list) else [event.reasons]
    first_reason = next((r.get("message") for r in reasons if isinstance(r, dict) and r.get("message")), "")
    tier = event.detail.get("tier", "") if isinstance(event.detail, dict) else ""
    record: dict[str, Any] = {
        "class_uid": ocsf_class.uid,
        "class_name": ocsf_class.name,
        "category_uid": ocsf_class.category_uid,
        "category_name": ocsf_class.category_name,
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": ocsf_class.uid * 100 + activity_id,
        "time": _epoch_ms(event.time),
        "time_dt": event.time.isoformat(timespec="microseconds"),
        "severity_id": _severity(event.action, event.outcome),
        "status_id": status_id,
        "status": _STATUS_NAME.get(status_id, "Other"),
        "status_code": event.outcome,
        "status_detail": first_reason or event.outcome,
        "message": f"{event.action}: {event.outcome}",
        "metadata": {
            "version": OCSF_VERSION,
            "product": PRODUCT,
            "log_name": "audit",
            "uid": event.hash,
            "sequence": event.seq,
            "event_code": event.action,
            **({"correlation_uid": event.request_id} if event.request_id else {}),
        },
        "unmapped": {
            "action": event.action,
            "outcome": event.outcome,
            "reasons": event.reasons,
            "detail": event.detail,
            "prev_hash": event.prev_hash,
            "hash": event.hash,
        },
    }
    if event.actor:
        record["actor"] = {"user": {"name": event.actor}}
    endpoint = {}
    if event.client_address and _is_ip(event.client_address):
        endpoint["ip"] = event.client_address
    if event.zone:
        endpoint["zone"] = event.zone
    if endpoint:
        record["src_endpoint"] = endpoint
    if event.device:
        record["device"] = {"uid": event.device}
    if event.resource:
        resource: dict[str, Any] = {"uid": event.resource, "type": "portal.resource"}
        if tier:
            resource["data"] = {"tier": tier}
        record["resources"] = [resource]
    return record


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


# --- exports -----------------------------------------------------------------------------

CSV_COLUMNS = (
    "metadata.sequence", "time_dt", "class_uid", "class_name", "activity_id", "activity_name",
    "type_uid", "severity_id", "status_id", "status", "status_code", "status_detail",
    "actor.user.name", "src_endpoint.ip", "src_endpoint.zone", "device.uid", "resource.uid",
    "resource.tier", "metadata.correlation_uid", "portal.action", "reasons", "detail",
    "prev_hash", "hash",
)
# A cell starting with one of these is a formula to a spreadsheet; usernames in failed
# sign-ins are typed by anyone, so they are defused with a leading apostrophe (CSV only).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_row(event: AuditEvent) -> list[str]:
    rec = ocsf_event(event)
    resource = (rec.get("resources") or [{}])[0]
    values = [
        event.seq, rec["time_dt"], rec["class_uid"], rec["class_name"], rec["activity_id"],
        rec["activity_name"], rec["type_uid"], rec["severity_id"], rec["status_id"], rec["status"],
        event.outcome, rec["status_detail"], event.actor, rec.get("src_endpoint", {}).get("ip", ""),
        event.zone, event.device, event.resource, resource.get("data", {}).get("tier", ""),
        event.request_id, event.action, _json(event.reasons), _json(event.detail),
        event.prev_hash, event.hash,
    ]
    return [_cell(v) for v in values]


@dataclass(frozen=True)
class ChainHeadAt:
    """Where the chain ended when an export was asked for."""

    seq: int
    hash: str


def chain_head() -> ChainHeadAt:
    """The chain head now (sequence number and hash of the last event)."""
    head = ChainHead.objects.filter(pk=1).values_list("seq", "hash").first()
    return ChainHeadAt(*head) if head else ChainHeadAt(0, "0" * 64)


def head_at(seq: int) -> ChainHeadAt | None:
    """The chain head as it was when event ``seq`` was the last one (None if it never was)."""
    if seq == 0:
        return ChainHeadAt(0, "0" * 64)
    digest = AuditEvent.objects.filter(seq=seq).values_list("hash", flat=True).first()
    return ChainHeadAt(seq, digest) if digest else None


def export_events(criteria: AuditFilter, head: ChainHeadAt) -> Iterator[AuditEvent]:
    """The matching events up to ``head``, in chain order, fetched in bounded chunks."""
    chunk = settings.PORTAL_AUDIT_EXPORT_CHUNK_SIZE
    return filter_events(criteria).filter(seq__lte=head.seq).order_by("seq").iterator(chunk_size=chunk)


def csv_lines(criteria: AuditFilter, head: ChainHeadAt) -> Iterator[bytes]:
    """The CSV export, a header line then one line per event (UTF-8)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for event in export_events(criteria, head):
        writer.writerow(_csv_row(event))
        if buffer.tell() > 32_768:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def manifest(criteria: AuditFilter, head: ChainHeadAt, *, export_format: str, rows: int,
             content_sha256: str | None = None, generated_by: str = "") -> dict[str, Any]:
    """What an export holds: the filter, the chain head it is pinned to, and its row count."""
    body: dict[str, Any] = {
        "format": export_format,
        "filter": criteria.as_params(),
        "rows": rows,
        "chain_head": {"seq": head.seq, "hash": head.hash},
        "ocsf_version": OCSF_VERSION,
        "generated_at": timezone.now().isoformat(timespec="seconds"),
        "generated_by": generated_by,
    }
    if content_sha256 is not None:
        body["content_sha256"] = content_sha256
    return body


def _jsonl_records(criteria: AuditFilter, head: ChainHeadAt) -> Iterator[bytes]:
    for event in export_events(criteria, head):
        yield (_json(ocsf_event(event)) + "\n").encode()


def jsonl_lines(criteria: AuditFilter, head: ChainHeadAt, *, generated_by: str = "") -> Iterator[bytes]:
    """The JSON Lines export: one OCSF record a line, then one ``{"manifest": {...}}`` line.

    The manifest's ``content_sha256`` covers every byte before the manifest line.
    """
    digest = hashlib.sha256()
    rows = 0
    block: list[bytes] = []
    size = 0
    for line in _jsonl_records(criteria, head):
        digest.update(line)
        rows += 1
        block.append(line)
        size += len(line)
        if size > 32_768:
            yield b"".join(block)
            block, size = [], 0
    final = manifest(criteria, head, export_format="jsonl", rows=rows,
                     content_sha256=digest.hexdigest(), generated_by=generated_by)
    block.append((_json({"manifest": final}) + "\n").encode())
    yield b"".join(block)


def content_digest(export_format: str, criteria: AuditFilter, head: ChainHeadAt) -> tuple[int, str]:
    """Row count and SHA-256 of an export's rows, recomputed (CSV: the whole file; JSON
    Lines: every line before the manifest). Reads every matching row once."""
    digest = hashlib.sha256()
    chunks = csv_lines(criteria, head) if export_format == "csv" else _jsonl_records(criteria, head)
    for chunk in chunks:
        digest.update(chunk)
    return filter_events(criteria).filter(seq__lte=head.seq).count(), digest.hexdigest()
