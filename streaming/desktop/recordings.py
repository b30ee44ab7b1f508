"""What happens to a recording after its session: size and SHA-256, on the row and in the chain."""

from __future__ import annotations

import hashlib
import time
from enum import StrEnum
from pathlib import Path

from portal.audit.chain import record
from streaming.desktop.models import StreamSession

__all__ = ["RecordingState", "digest_file", "record_missing", "store_digest"]


class RecordingState(StrEnum):
    STORED = "stored"
    NOT_RECORDED = "not_recorded"
    MISSING = "missing"
    SETTLING = "settling"  # guacd wrote to it a moment ago; it may not be closed yet


def digest_file(path: Path) -> tuple[int, str]:
    """Size in bytes and SHA-256 of ``path``, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def store_digest(session_id: str, *, settle_seconds: float = 1.0) -> RecordingState:
    """Digest the session's recording (and SSH typescript) into the row and the audit chain.

    Idempotent: running it again for an unchanged file changes nothing.
    """
    session = StreamSession.objects.select_related("resource").filter(pk=session_id).first()
    if session is None or not session.recording_path:
        return RecordingState.NOT_RECORDED
    path = Path(session.recording_path)
    if not path.exists():
        return RecordingState.MISSING
    if time.time() - path.stat().st_mtime < settle_seconds:
        return RecordingState.SETTLING
    size, sha256 = digest_file(path)
    if (size, sha256) == (session.recording_size, session.recording_sha256):
        return RecordingState.STORED
    StreamSession.objects.filter(pk=session.pk).update(recording_size=size, recording_sha256=sha256)
    detail = {"session": str(session.pk), "path": str(path), "size": size, "sha256": sha256}
    if session.typescript_path and Path(session.typescript_path).exists():
        ts_size, ts_sha = digest_file(Path(session.typescript_path))
        detail.update(typescript_size=ts_size, typescript_sha256=ts_sha)
    record("desktop.recording", outcome="stored", actor="portal", resource=session.resource.slug,
           detail=detail)
    return RecordingState.STORED


def record_missing(session_id: str) -> None:
    """A recording tier's session left no recording: that is an audit event of its own."""
    session = StreamSession.objects.select_related("resource").filter(pk=session_id).first()
    if session is not None:
        record("desktop.recording", outcome="missing", actor="portal", resource=session.resource.slug,
               detail={"session": str(session.pk), "path": session.recording_path})
