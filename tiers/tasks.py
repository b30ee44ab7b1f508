"""Background jobs of the catalog: write to the trail when a just-in-time grant runs out.

A grant ends on time without this job (the decision reads ``expires_at``); the job only makes
the end visible in the audit trail, once per grant. The work is a plain function
(:func:`expire_due_grants`); the Celery task calls it, retries with backoff and is safe to
run twice (STYLE.md, convention 12). Beat runs it (``CELERY_BEAT_SCHEDULE`` in settings).
"""

from __future__ import annotations

from celery import shared_task
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from portal.audit.chain import record
from portal.audit.models import GrantExpiryNotice
from tiers.models import AccessGrant

__all__ = ["expire_due_grants", "expire_grants"]

_GRANTS_PER_RUN = 500


def expire_due_grants(limit: int = _GRANTS_PER_RUN) -> int:
    """Write ``access.expired`` once for each just-in-time grant past its end; return how many.

    Grants revoked before they ran out are left alone (the revocation is their end).
    """
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
def expire_grants() -> int:
    """Write ``access.expired`` for just-in-time grants that ran out."""
    return expire_due_grants()
