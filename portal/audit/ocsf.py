"""Audit events as OCSF-shaped records: one mapping for the SIEM feed and the exports.

What an auditor downloads (``portal.auditor.exports``) and what the SIEM receives
(``portal.audit.siem``) are the same records because both call :func:`ocsf_event`. It sits
with the ledger (it reads an event and nothing else), so the SIEM forwarder needs nothing
of the workspace above it. Fields: docs/audit-export.md.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from portal.audit.models import AuditEvent

__all__ = ["OCSF_VERSION", "OcsfClass", "ocsf_event", "register_action"]

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
