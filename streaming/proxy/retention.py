"""The proxy's retention hook: access records older than their resource's tier keeps them go.

Registered with the ledger's retention job (:mod:`portal.audit.retention`) when this module
is imported from ``ProxyConfig.ready``; each removal is an event in the chain.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from portal.audit.chain import record
from portal.audit.retention import JOB_ACTOR, register_retention
from streaming.proxy.models import AccessRecord
from tiers.models import Tier

__all__ = ["remove_old_access_records"]


def remove_old_access_records(now: datetime) -> dict[str, int]:
    """Delete each tier's access records older than ``Tier.retention_days``; return how many."""
    removed = 0
    for tier in Tier.objects.prefetch_related("resources"):
        cutoff = now - timedelta(days=tier.retention_days)
        slugs = [r.slug for r in tier.resources.all()]
        if not slugs:
            continue
        old = AccessRecord.objects.filter(resource__in=slugs, time__lt=cutoff)
        count = old.count()
        if count:
            old.delete()
            removed += count
            record("retention.access_records", outcome="removed", actor=JOB_ACTOR,
                   detail={"tier": tier.name, "before": cutoff.isoformat(), "count": count,
                           "resources": slugs})
    return {"access_records": removed}


register_retention("proxy.access_records", remove_old_access_records)
