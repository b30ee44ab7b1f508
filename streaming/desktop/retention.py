"""The desktop's retention hook: recordings older than their tier keeps them go.

Registered with the ledger's retention job (:mod:`portal.audit.retention`) when this module
is imported from ``DesktopConfig.ready``. Each removal is an event in the chain carrying the SHA-256 the
file had; a path outside the recordings directory is never deleted.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings

from portal.audit.chain import record
from portal.audit.retention import JOB_ACTOR, register_retention
from streaming.desktop.models import StreamSession
from tiers.models import Tier

__all__ = ["remove_old_recordings"]


def _inside_recordings(path: Path) -> bool:
    root = Path(settings.PORTAL_RECORDINGS_DIR).resolve()
    try:
        return path.resolve().is_relative_to(root)
    except OSError:
        return False


def remove_old_recordings(now: datetime) -> dict[str, int]:
    """Delete each tier's recordings of sessions ended before ``Tier.retention_days``; return how many."""
    removed = 0
    for tier in Tier.objects.all():
        cutoff = now - timedelta(days=tier.retention_days)
        sessions = StreamSession.objects.filter(resource__tier=tier, ended_at__lt=cutoff).exclude(
            recording_path="")
        for session in sessions.select_related("resource"):
            files = [p for p in (session.recording_path, session.typescript_path) if p]
            for name in files:
                path = Path(name)
                if _inside_recordings(path) and path.exists():
                    path.unlink()
            StreamSession.objects.filter(pk=session.pk).update(recording_path="", typescript_path="")
            removed += 1
            record("retention.recording", outcome="removed", actor=JOB_ACTOR,
                   resource=session.resource.slug,
                   detail={"session": str(session.pk), "tier": tier.name, "ended_at":
                           session.ended_at.isoformat(), "sha256": session.recording_sha256,
                           "size": session.recording_size, "files": files})
    return {"recordings": removed}


register_retention("desktop.recordings", remove_old_recordings)
