"""Background jobs of the audit trail: verify the chain, forward to the SIEM, expire grants.

The work is in plain functions (:func:`verify_and_store`, :func:`expire_due_grants`,
:func:`portal.audit.siem.forward_all`); the Celery tasks only call them, retry with backoff
when a dependency is down, and are safe to run twice (STYLE.md, convention 12). Beat runs
them (``CELERY_BEAT_SCHEDULE`` in settings, entries expire).
"""

from __future__ import annotations

import time
from typing import Any

from celery import shared_task
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from portal.audit.chain import record, verify_chain
from portal.audit.models import ChainVerification, GrantExpiryNotice
from portal.audit.siem import SiemUnavailable, forward_all

__all__ = [
    "JOB_ACTOR", "apply_retention_policy", "expire_due_grants", "expire_grants", "forward_events_to_siem",
    "verify_and_store", "verify_audit_chain",
]

JOB_ACTOR = "job:audit"  # a colon: no username can take this name
_MAX_ALERT_REASONS = 50
_GRANTS_PER_RUN = 500


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


def expire_due_grants(limit: int = _GRANTS_PER_RUN) -> int:
    """Write ``access.expired`` once for each just-in-time grant past its end; return how many.

    Grants revoked before they ran out are left alone (the revocation is their end).
    """
    from tiers.models import AccessGrant  # the catalog is another app; import where used

    now = timezone.now()
    due = (AccessGrant.objects.filter(expires_at__lte=now)
           .filter(Q(revoked_at__isnull=True) | Q(revoked_at__gt=F("expires_at")))
           .exclude(pk__in=GrantExpiryNotice.objects.values("grant_id"))
           .select_related("user", "resource__tier").order_by("expires_at")[:limit])
    written = 0
    for grant in due:
        with transaction.atomic():
            try:
                with transaction.atomic():
                    notice = GrantExpiryNotice.objects.create(grant_id=grant.pk, event_seq=0)
            except IntegrityError:
                continue  # another run wrote this one
            event = record(
                "access.expired", outcome="expired", actor=grant.user.get_username(),
                resource=grant.resource.slug,
                reasons=[{"rule": "grant_expired", "message": "The just-in-time grant ran out.",
                          "values": {"expires_at": grant.expires_at.isoformat()}, "remedy": ""}],
                detail={"grant": grant.pk, "tier": grant.resource.tier.name, "granted_by": grant.granted_by,
                        "starts_at": grant.starts_at.isoformat(),
                        "expires_at": grant.expires_at.isoformat(), "by": "job:expire-grants"})
            GrantExpiryNotice.objects.filter(pk=notice.pk).update(event_seq=event.seq)
            written += 1
    return written


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
def expire_grants() -> int:
    """Write ``access.expired`` for just-in-time grants that ran out."""
    return expire_due_grants()


@shared_task(autoretry_for=(DatabaseError,), retry_backoff=5, retry_backoff_max=300, retry_jitter=True,
             max_retries=5)
def apply_retention_policy() -> dict[str, int]:
    """Remove recordings and access records older than their tier keeps them (each removal audited)."""
    from portal.audit.retention import apply_retention

    return apply_retention()
