"""A recording's digest: taken once guacd is done with the file, stored once, and never lost.

No guacd here: the recording is a file the test writes, grown the way guacd grows it after
a session ends (it finishes its last frame, then closes the file), and the session rows are
ended through the broker as the tunnel ends them.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connections
from django.utils import timezone

from portal.audit.models import AuditEvent
from streaming.desktop import broker, recordings
from streaming.desktop.models import EndReason, StreamSession
from streaming.desktop.recordings import RecordingState, store_digest
from streaming.desktop.tasks import sweep_recording_digests
from tests.factories import UserFactory
from tests.streaming.desktop.conftest import make_resource

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

FIRST_FRAMES = b"4.size,1.0,4.1024,3.768;4.sync,6.100000;"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def make_session(settings, tmp_path, stream_tier):
    """A recorded session's row and its recording file (None: guacd left no file)."""
    settings.PORTAL_RECORDINGS_DIR = tmp_path / "recordings"
    settings.PORTAL_RECORDINGS_DIR.mkdir()
    resource = make_resource("ops-desktop", "vnc", "127.0.0.1:5999", stream_tier, None)
    user = UserFactory(username="erin", role="employee")

    def make(*, ended_ago: timedelta | None = None, content: bytes | None = FIRST_FRAMES) -> StreamSession:
        now = timezone.now()
        session = StreamSession.objects.create(
            user=user, resource=resource, tier_name=stream_tier.name, obligations={"record": True},
            state=StreamSession.State.LIVE, started_at=now - timedelta(minutes=30))
        path = Path(settings.PORTAL_RECORDINGS_DIR) / str(session.pk)
        if content is not None:
            path.write_bytes(content)
        fields = {"recording_path": str(path)}
        if ended_ago is not None:
            fields.update(state=StreamSession.State.ENDED, ended_at=now - ended_ago, end_reason=EndReason.CLOSED)
            if content is not None:  # guacd's last write came with the end
                stamp = (now - ended_ago).timestamp()
                os.utime(path, (stamp, stamp))
        StreamSession.objects.filter(pk=session.pk).update(**fields)
        session.refresh_from_db()
        return session
    return make


def _wait_for_digest(session: StreamSession, timeout: float = 15) -> StreamSession:
    deadline = time.monotonic() + timeout
    while True:
        session.refresh_from_db()
        if session.recording_sha256:
            return session
        assert time.monotonic() < deadline, "the recording was never digested"
        time.sleep(0.1)


def _stored_events() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="desktop.recording", outcome="stored").order_by("seq"))


def test_a_recording_that_grows_after_the_session_ends_is_digested_as_guacd_leaves_it(make_session, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True  # the embedded portal: no worker to retry the digest
    session = make_session()
    path = Path(session.recording_path)
    started = time.monotonic()
    assert broker.end_session(session.pk, EndReason.CLOSED, "You closed the desktop.", ended_by="erin")
    assert time.monotonic() - started < 0.5  # the tunnel's event loop never waits for the file
    for stamp in (100500, 101000, 101500):  # guacd's last frames, each within a second of the one before
        time.sleep(0.4)
        with path.open("ab") as recording:
            recording.write(f"4.sync,6.{stamp};".encode())
    final = path.read_bytes()

    session = _wait_for_digest(session)

    assert (session.recording_size, session.recording_sha256) == (len(final), _sha(final))
    events = _stored_events()
    assert [e.detail["sha256"] for e in events] == [_sha(final)]
    assert events[0].detail["size"] == len(final) and events[0].detail["session"] == str(session.pk)


def test_two_overlapping_digests_store_and_audit_the_recording_once(make_session, monkeypatch):
    session = make_session(ended_ago=timedelta(seconds=30))
    hashed = threading.Barrier(3, timeout=10)

    def digest_file_then_meet(path: Path) -> tuple[int, str]:
        result = real_digest_file(path)
        hashed.wait()  # every run has read the file before any of them stores it
        return result

    real_digest_file = recordings.digest_file
    monkeypatch.setattr(recordings, "digest_file", digest_file_then_meet)
    states: list[RecordingState] = []

    def digest() -> None:
        try:
            states.append(store_digest(str(session.pk)))
        finally:
            connections.close_all()

    runs = [threading.Thread(target=digest) for _ in range(3)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(20)
    monkeypatch.undo()
    assert states == [RecordingState.STORED] * 3
    assert store_digest(str(session.pk)) is RecordingState.STORED  # and once more, later
    assert [e.detail["sha256"] for e in _stored_events()] == [_sha(FIRST_FRAMES)]


@pytest.mark.parametrize(("ended_ago", "content", "state"), [
    (None, FIRST_FRAMES, RecordingState.SETTLING),  # still live: guacd is writing it
    (timedelta(seconds=0), FIRST_FRAMES, RecordingState.SETTLING),  # just ended: guacd's last frame may follow
    (timedelta(seconds=30), None, RecordingState.MISSING),
    (timedelta(seconds=30), FIRST_FRAMES, RecordingState.STORED),
])
def test_a_recording_is_digested_only_once_its_session_ended_and_it_settled(make_session, ended_ago, content,
                                                                           state):
    session = make_session(ended_ago=ended_ago, content=content)
    assert store_digest(str(session.pk)) is state
    session.refresh_from_db()
    assert bool(session.recording_sha256) == (state is RecordingState.STORED)


def test_the_sweep_digests_an_ended_session_whose_digest_was_lost_and_only_that(make_session):
    lost = make_session(ended_ago=timedelta(minutes=10))
    recent = make_session(ended_ago=timedelta(seconds=20))  # its own digest is still on its way
    missing = make_session(ended_ago=timedelta(minutes=10), content=None)
    digested = make_session(ended_ago=timedelta(minutes=10))
    assert store_digest(str(digested.pk)) is RecordingState.STORED
    Path(digested.recording_path).write_bytes(b"changed afterwards")  # the sweep must not bless it

    counts = sweep_recording_digests.apply().get()

    assert counts == {"stored": 1, "missing": 1}
    lost.refresh_from_db()
    assert (lost.recording_size, lost.recording_sha256) == (len(FIRST_FRAMES), _sha(FIRST_FRAMES))
    recent.refresh_from_db()
    assert recent.recording_sha256 == ""
    digested.refresh_from_db()
    assert digested.recording_sha256 == _sha(FIRST_FRAMES)
    assert [e.detail["session"] for e in _stored_events()] == [str(digested.pk), str(lost.pk)]

    assert sweep_recording_digests.apply().get() == {}  # nothing left, and a missing file is reported once
    missed = AuditEvent.objects.filter(action="desktop.recording", outcome="missing")
    assert [e.detail["session"] for e in missed] == [str(missing.pk)]


def test_the_digest_sweep_is_scheduled_with_an_expiry_shorter_than_its_interval():
    from django.conf import settings

    from portal.celery import app
    from streaming.desktop.tasks import sweep_recording_digests

    entry = settings.CELERY_BEAT_SCHEDULE["desktop-sweep-recording-digests"]
    assert entry["task"] == sweep_recording_digests.name and sweep_recording_digests.name in app.tasks
    assert 0 < entry["options"]["expires"] < entry["schedule"]
