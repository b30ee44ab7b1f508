"""Celery tasks of the desktop broker (small, idempotent, by id).

Beat runs :func:`sweep_recording_digests` (``CELERY_BEAT_SCHEDULE`` in settings, the entry
expires before the next run is due).
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from streaming.desktop.recordings import (
    SETTLE_SECONDS,
    RecordingState,
    digest_in_background,
    record_missing,
    store_digest,
    sweep_undigested,
)

__all__ = ["digest_recording", "schedule_digest", "sweep_recording_digests"]


@shared_task(bind=True, max_retries=6, acks_late=True)
def digest_recording(self, session_id: str) -> str:
    """Store size and SHA-256 of a finished session's recording.

    guacd closes the file a moment after the session ends; a worker waits for it to settle
    with backoff. Run eagerly (``apply``), it digests what is there.
    """
    state = store_digest(session_id, settle_seconds=0 if self.request.is_eager else SETTLE_SECONDS)
    waiting = state in (RecordingState.MISSING, RecordingState.SETTLING)
    if waiting and not self.request.is_eager and self.request.retries < self.max_retries:
        raise self.retry(countdown=2 ** self.request.retries)
    if state is RecordingState.MISSING:
        record_missing(session_id)
    return str(state)


@shared_task(acks_late=True)
def sweep_recording_digests() -> dict[str, int]:
    """Digest ended sessions whose recording digest is still empty: the safety net for a lost task."""
    return sweep_undigested()


def schedule_digest(session_id: str) -> None:
    """After a recorded session ends: a worker's task, or without workers (eager Celery) a
    background thread, digests the recording once guacd has finished writing it."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        digest_in_background(session_id)  # an eager task would run here, before the file settles
    else:
        digest_recording.delay(session_id)
