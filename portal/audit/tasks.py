"""Background jobs of the audit trail: verify the chain, forward to the SIEM, run retention.

The work is in plain functions (:func:`verify_and_store`, :func:`portal.audit.siem.forward_all`,
:func:`portal.audit.retention.apply_retention`); the Celery tasks only call them, retry with backoff
when a dependency is down, and are safe to run twice (STYLE.md, convention 12). Beat runs
them (``CELERY_BEAT_SCHEDULE`` in settings, entries expire).
"""

from __future__ import annotations

import time
from typing import Any

from celery import shared_task
from django.db import DatabaseError
from django.utils import timezone

from portal.audit.chain import record, verify_chain
from portal.audit.models import ChainVerification
from portal.audit.retention import apply_retention
from portal.audit.siem import SiemUnavailable, forward_all

__all__ = [
    "JOB_ACTOR", "apply_retention_policy", "forward_events_to_siem", "verify_and_store", "verify_audit_chain",
]

JOB_ACTOR = "job:audit"  # a colon: no username can take this name
_MAX_ALERT_REASONS = 50


def verify_and_store() -> ChainVerification:
    """Walk the chain, keep the result, and raise an ``audit.chain_broken`` alert on a new break.

    A break already reported (same problems as the previous run) is not reported again, so
    a run repeated by a retry or by beat does not flood the trail. Appending the alert to a
    broken chain is fine: the break stays where it is and stays detectable.
    """
    started = time.perf_counter()
    report = verify_chain()
    duration_ms = int((time.perf_counter() - started) * 1000)
    previous = ChainVerification.objects.order_by("-time", "-id").first()
    verification = ChainVerification.objects.create(
        time=timezone.now(), ok=report.ok, checked=report.checked, head_seq=report.head_seq,
        duration_ms=duration_ms, problems=report.problems)
    if not report.ok and (previous is None or previous.ok or previous.problems != report.problems):
        record(
            "audit.chain_broken", outcome="alert", actor=JOB_ACTOR,
            reasons=[{"rule": "chain_integrity", "message": problem, "values": {},
                      "remedy": "Compare with the last export or SIEM copy; restore from backup."}
                     for problem in report.problems[:_MAX_ALERT_REASONS]],
            detail={"verification": verification.pk, "problems": len(report.problems),
                    "checked": report.checked, "head_seq": report.head_seq})
    return verification


@shared_task(autoretry_for=(DatabaseError,), retry_backoff=5, retry_backoff_max=300, retry_jitter=True,
             max_retries=5)
def verify_audit_chain() -> dict[str, Any]:
    """Verify the whole chain and store the result (shown on the auditor's front page)."""
    verification = verify_and_store()
    return {"verification": verification.pk, "ok": verification.ok, "checked": verification.checked,
            "problems": len(verification.problems)}


@shared_task(autoretry_for=(SiemUnavailable, DatabaseError), retry_backoff=5, retry_backoff_max=300,
             retry_jitter=True, max_retries=3)
def forward_events_to_siem() -> dict[str, int]:
    """Send the events after each destination's cursor; nothing is lost while one is down."""
    return {result.destination: result.last_seq for result in forward_all()}


@shared_task(autoretry_for=(DatabaseError,), retry_backoff=5, retry_backoff_max=300, retry_jitter=True,
             max_retries=5)
def apply_retention_policy() -> dict[str, int]:
    """Run every app's retention hook: what a tier no longer keeps goes (each removal audited)."""
    return apply_retention()
