"""What happens to a recording after its session: size and SHA-256, on the row and in the chain.

guacd writes a session's last bytes a moment after the session ends (it finishes its current
frame, then closes the file), so a recording is digested only once it has *settled*: the
session has ended and neither it nor its files changed for :data:`SETTLE_SECONDS`. Three
paths lead here, and may overlap: the per-session Celery task (retries while the file
settles), a background thread in the embedded, eager mode (:func:`digest_in_background`,
never on the event loop), and the periodic sweep (:func:`sweep_undigested`) that catches a
digest that was lost. :func:`store_digest` is safe to run from all three at once.
"""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import timedelta
from enum import StrEnum
from pathlib import Path

import structlog
from django.db import DatabaseError, connections, transaction
from django.utils import timezone

from portal.audit.chain import record
from portal.audit.models import AuditEvent
from streaming.desktop.models import StreamSession

__all__ = [
    "SETTLE_SECONDS",
    "RecordingState",
    "digest_file",
    "digest_in_background",
    "digest_when_settled",
    "record_missing",
    "stop_background_digests",
    "store_digest",
    "sweep_undigested",
]

log = structlog.get_logger(__name__)

# guacd 1.3 emits a frame (at least a ``sync``) about once a second while a connection is up,
# and finishes its last frame within a second of a disconnect: a little more than that
# second without a change means it is done with the file.
SETTLE_SECONDS = 1.5
# The background digest gives up waiting after this long and digests what is there.
DEFERRED_MAX_WAIT_SECONDS = 60.0
# The sweep leaves recent sessions to their own digest (the task's retries span about a minute).
SWEEP_GRACE = timedelta(minutes=5)
SWEEP_LOOKBACK = timedelta(days=7)
SWEEP_BATCH = 50


class RecordingState(StrEnum):
    STORED = "stored"
    NOT_RECORDED = "not_recorded"
    MISSING = "missing"
    SETTLING = "settling"  # the session is not over, or guacd wrote to the file a moment ago


def digest_file(path: Path) -> tuple[int, str]:
    """Size in bytes and SHA-256 of ``path``, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _files(session: StreamSession) -> list[Path]:
    files = [Path(session.recording_path)]
    if session.typescript_path:
        files.append(Path(session.typescript_path))
    return files


def _file_state(files: list[Path]) -> tuple[tuple[int, int] | None, ...]:
    """(size, mtime in ns) of each file, None for one that does not exist: equal means unchanged."""
    states = []
    for path in files:
        try:
            stat = path.stat()
        except FileNotFoundError:
            states.append(None)
        else:
            states.append((stat.st_size, stat.st_mtime_ns))
    return tuple(states)


def store_digest(session_id: str, *, settle_seconds: float = SETTLE_SECONDS) -> RecordingState:
    """Digest the session's recording (and SSH typescript) into the row and the audit chain.

    Idempotent, also when two runs overlap: the file is hashed outside any lock, then the row
    is locked and compared, so a digest is stored and audited once; a run whose file changed
    while it was hashing stores nothing (SETTLING), and the run that saw the final file wins.
    """
    session = StreamSession.objects.select_related("resource").filter(pk=session_id).first()
    if session is None or not session.recording_path:
        return RecordingState.NOT_RECORDED
    if session.state != StreamSession.State.ENDED or session.ended_at is None:
        return RecordingState.SETTLING  # guacd is still writing it
    files = _files(session)
    before = _file_state(files)
    if before[0] is None:
        return RecordingState.MISSING
    last_change = max([session.ended_at.timestamp()] + [s[1] / 1e9 for s in before if s is not None])
    if time.time() - last_change < settle_seconds:
        return RecordingState.SETTLING
    size, sha256 = digest_file(files[0])
    detail = {"session": str(session.pk), "path": str(files[0]), "size": size, "sha256": sha256}
    if len(files) > 1 and before[1] is not None:
        ts_size, ts_sha = digest_file(files[1])
        detail.update(typescript_size=ts_size, typescript_sha256=ts_sha)
    with transaction.atomic():
        row = (StreamSession.objects.select_for_update().filter(pk=session.pk)
               .values_list("recording_size", "recording_sha256").first())
        if row is None:
            return RecordingState.NOT_RECORDED
        if row == (size, sha256):
            return RecordingState.STORED  # this digest is stored (and audited) already
        if _file_state(files) != before:
            return RecordingState.SETTLING  # changed while we read it: what we hashed is stale
        StreamSession.objects.filter(pk=session.pk).update(recording_size=size, recording_sha256=sha256)
        record("desktop.recording", outcome="stored", actor="portal", resource=session.resource.slug,
               detail=detail)
    return RecordingState.STORED


def record_missing(session_id: str) -> None:
    """A recording tier's session left no recording: that is an audit event of its own (once)."""
    with transaction.atomic():  # the row lock makes a second, overlapping report wait, then see the first
        session = (StreamSession.objects.select_for_update().select_related("resource")
                   .filter(pk=session_id).first())
        if session is None:
            return
        reported = AuditEvent.objects.filter(action="desktop.recording", outcome="missing",
                                             resource=session.resource.slug, detail__session=str(session.pk))
        if not reported.exists():
            record("desktop.recording", outcome="missing", actor="portal", resource=session.resource.slug,
                   detail={"session": str(session.pk), "path": session.recording_path})


def digest_when_settled(session_id: str, *, quiet_seconds: float = SETTLE_SECONDS,
                        max_wait_seconds: float = DEFERRED_MAX_WAIT_SECONDS,
                        poll_seconds: float = 0.1, stop: threading.Event | None = None) -> RecordingState:
    """Wait (blocking: call it from a thread) until the files stop changing, then digest them.

    The quiet time is counted from the call, not from the file's mtime: on an idle desktop
    guacd may not have written for seconds when the session ends, and still writes its last
    frame as it closes the file. After ``max_wait_seconds`` what is there is digested; once
    ``stop`` is set the wait ends with nothing stored (SETTLING: the sweep's to catch).
    """
    stop = stop or threading.Event()
    session = StreamSession.objects.filter(pk=session_id).first()
    if session is None or not session.recording_path:
        return RecordingState.NOT_RECORDED
    files = _files(session)
    started = quiet_since = time.monotonic()
    seen = _file_state(files)
    while True:
        now = time.monotonic()
        if now - quiet_since >= quiet_seconds and seen[0] is not None:
            break
        if now - started >= max_wait_seconds:
            log.warning("desktop.recording_not_settled", session=session_id, waited=round(now - started, 1))
            break
        if stop.wait(poll_seconds):
            return RecordingState.SETTLING
        current = _file_state(files)
        if current != seen:
            seen, quiet_since = current, time.monotonic()
    state = store_digest(session_id, settle_seconds=0)
    if state is RecordingState.SETTLING and not stop.wait(quiet_seconds):  # changed as it was read: again
        state = store_digest(session_id, settle_seconds=0)
    if state is RecordingState.MISSING:
        record_missing(session_id)
    return state


_background: dict[threading.Thread, threading.Event] = {}
_background_lock = threading.Lock()


def _digest_in_thread(session_id: str, stop: threading.Event) -> None:
    try:
        digest_when_settled(session_id, stop=stop)
    except (DatabaseError, OSError):
        # The sweep digests it later; a thread has no caller to raise to.
        log.exception("desktop.recording_digest_failed", session=session_id)
    finally:
        connections.close_all()  # this thread's connections only
        with _background_lock:
            _background.pop(threading.current_thread(), None)


def digest_in_background(session_id: str) -> threading.Thread:
    """Digest a just-ended session's recording in a daemon thread, once it has settled.

    For the embedded (eager Celery) mode, where no worker can retry: the wait must stay off
    the event loop, which has to go on relaying other sessions and ending them on time.
    """
    stop = threading.Event()
    thread = threading.Thread(target=_digest_in_thread, args=(str(session_id), stop),
                              name=f"recording-digest-{session_id}", daemon=True)
    with _background_lock:
        _background[thread] = stop
    thread.start()
    return thread


def stop_background_digests(timeout: float = 5.0) -> None:
    """End the background digests' waits (a digest already reading finishes) and join them.

    For a clean stop (and for tests, before their database goes): what was not digested is
    left to the sweep.
    """
    with _background_lock:
        running = list(_background.items())
    for _thread, stop in running:
        stop.set()
    deadline = time.monotonic() + timeout
    for thread, _stop in running:
        thread.join(max(0.0, deadline - time.monotonic()))


def sweep_undigested(*, limit: int = SWEEP_BATCH) -> dict[str, int]:
    """Digest ended sessions whose recording digest is still empty (a lost task); counts by state.

    Sessions ended less than :data:`SWEEP_GRACE` ago are left to their own digest; a
    recording already reported missing is not looked at again. A run does at most ``limit``.
    """
    now = timezone.now()
    since = now - SWEEP_LOOKBACK
    reported = set(AuditEvent.objects.filter(action="desktop.recording", outcome="missing",
                                             time__gte=since - timedelta(days=1))
                   .values_list("detail__session", flat=True))
    candidates = (StreamSession.objects
                  .filter(state=StreamSession.State.ENDED, recording_sha256="",
                          ended_at__lte=now - SWEEP_GRACE, ended_at__gte=since)
                  .exclude(recording_path="").order_by("ended_at").values_list("pk", flat=True))
    pending = [str(pk) for pk in candidates[:limit + len(reported)] if str(pk) not in reported][:limit]
    counts: dict[str, int] = {}
    for session_id in pending:
        state = store_digest(session_id)
        if state is RecordingState.MISSING:
            record_missing(session_id)
        counts[str(state)] = counts.get(str(state), 0) + 1
    return counts
