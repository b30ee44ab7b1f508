"""Celery tasks of the desktop broker (small, idempotent, by id)."""

from __future__ import annotations

from celery import shared_task

from streaming.desktop.recordings import RecordingState, record_missing, store_digest

__all__ = ["digest_recording"]


@shared_task(bind=True, max_retries=6, acks_late=True)
def digest_recording(self, session_id: str) -> str:
    """Store size and SHA-256 of a finished session's recording.

    guacd closes the file a moment after the session ends; a worker waits for it with
    backoff, an eager run (no Redis) digests what is there.
    """
    state = store_digest(session_id, settle_seconds=0 if self.request.is_eager else 1.0)
    waiting = state in (RecordingState.MISSING, RecordingState.SETTLING)
    if waiting and not self.request.is_eager and self.request.retries < self.max_retries:
        raise self.retry(countdown=2 ** self.request.retries)
    if state is RecordingState.MISSING:
        record_missing(session_id)
    return str(state)
