"""Retention: recordings and proxy access records older than their tier keeps them go.

Each tier says how long (``Tier.retention_days``). The audit chain itself is never pruned
(its rows are the proof); each removal is an event in it instead, with what was removed
and, for recordings, the SHA-256 the file had, so the removal itself is evidence.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from portal.audit.chain import record
from streaming.desktop.models import StreamSession
from streaming.proxy.models import AccessRecord
from tiers.models import Tier

__all__ = ["JOB_ACTOR", "apply_retention"]

JOB_ACTOR = "job:retention"  # a colon: no username can take this name


def _inside_recordings(path: Path) -> bool:
    root = Path(settings.PORTAL_RECORDINGS_DIR).resolve()
    try:
        return path.resolve().is_relative_to(root)
    except OSError:
        return False


def apply_retention(now=None) -> dict[str, int]:
    """Remove what each tier no longer keeps; return counts (idempotent)."""
    now = now or timezone.now()
    removed = {"access_records": 0, "recordings": 0}
    for tier in Tier.objects.prefetch_related("resources"):
        cutoff = now - timedelta(days=tier.retention_days)
        slugs = [r.slug for r in tier.resources.all()]
        if slugs:
            old = AccessRecord.objects.filter(resource__in=slugs, time__lt=cutoff)
            count = old.count()
            if count:
                old.delete()
                removed["access_records"] += count
                record("retention.access_records", outcome="removed", actor=JOB_ACTOR,
                       detail={"tier": tier.name, "before": cutoff.isoformat(), "count": count,
                               "resources": slugs})
        sessions = StreamSession.objects.filter(resource__tier=tier, ended_at__lt=cutoff).exclude(
            recording_path="")
        for session in sessions.select_related("resource"):
            files = [p for p in (session.recording_path, session.typescript_path) if p]
            for name in files:
                path = Path(name)
                if _inside_recordings(path) and path.exists():
                    path.unlink()
            StreamSession.objects.filter(pk=session.pk).update(recording_path="", typescript_path="")
            removed["recordings"] += 1
            record("retention.recording", outcome="removed", actor=JOB_ACTOR,
                   resource=session.resource.slug,
                   detail={"session": str(session.pk), "tier": tier.name, "ended_at":
                           session.ended_at.isoformat(), "sha256": session.recording_sha256,
                           "size": session.recording_size, "files": files})
    return removed
