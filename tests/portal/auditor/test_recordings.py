"""Recording playback: auditors only, bytes by range, path from the session id, one event per view."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from portal.audit.models import AuditEvent
from portal.auditor.recordings import (
    ByteRange,
    RangeNotSatisfiable,
    RecordingResponse,
    parse_range,
    recording_path,
)
from streaming.desktop.models import StreamSession
from tests.conftest import sign_in
from tests.portal.auditor.conftest import person
from tiers.models import Resource, Tier

pytestmark = pytest.mark.django_db

CONTENT = b"4.size,1.0,4.1024,3.768;4.sync,1.0;" + bytes(range(256)) * 40  # 10 276 bytes


@pytest.fixture
def recordings(settings, tmp_path):
    settings.PORTAL_RECORDINGS_DIR = tmp_path / "recordings"
    settings.PORTAL_RECORDINGS_DIR.mkdir()
    return settings.PORTAL_RECORDINGS_DIR


@pytest.fixture
def stream(db, employee, recordings) -> StreamSession:
    tier = Tier.objects.create(name="high", rank=20, access_mode="stream", recording=True)
    resource = Resource.objects.create(slug="ops-desktop", name="Ops", kind="vnc", upstream="127.0.0.1:5900",
                                       tier=tier)
    started = timezone.now() - timedelta(minutes=5)
    session = StreamSession.objects.create(
        user=employee, resource=resource, tier_name="high", state="ended", created_at=started, started_at=started,
        ended_at=started + timedelta(minutes=2), end_reason="closed", ended_by="erin",
        recording_path=str(recordings / "x"), recording_size=len(CONTENT),
        recording_sha256=hashlib.sha256(CONTENT).hexdigest())
    (recordings / str(session.pk)).write_bytes(CONTENT)
    return session


def body(response) -> bytes:
    return b"".join(response.streaming_content)


# --- the Range header ----------------------------------------------------------------------

@pytest.mark.parametrize(("header", "expected"), [
    ("", None),
    ("bytes=0-99", ByteRange(0, 99)),
    ("bytes=100-", ByteRange(100, 999)),
    ("bytes=-10", ByteRange(990, 999)),
    ("bytes=-5000", ByteRange(0, 999)),
    ("bytes=990-5000", ByteRange(990, 999)),
    ("bytes = 5 - 9 ", ByteRange(5, 9)),
    ("BYTES=0-0", ByteRange(0, 0)),
    ("items=0-5", None),  # another unit: ignored, the whole file
])
def test_a_single_byte_range_is_understood(header, expected):
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", [
    "bytes=1000-", "bytes=5000-6000", "bytes=9-5", "bytes=-0", "bytes=0-1,5-9", "bytes=abc", "bytes=",
    "bytes=1-2-3", "bytes", "bytes=-", "bytes=0x10-20", "bytes=१-2", "bytes=99999999999999999999-",
])
def test_a_bad_or_unsatisfiable_range_is_refused(header):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 1000)


def test_nothing_is_satisfiable_in_an_empty_file():
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=0-", 0)


# --- where the file is ---------------------------------------------------------------------

def test_the_path_comes_from_the_session_id_only(recordings):
    session_id = uuid.uuid4()
    assert recording_path(session_id) is None
    (recordings / str(session_id)).write_bytes(b"x")
    assert recording_path(session_id) == (recordings / str(session_id)).resolve()
    for hostile in ("../../etc/passwd", "/etc/passwd", f"{session_id}/../x", ""):
        with pytest.raises(ValueError):
            recording_path(hostile)


def test_a_symlink_in_the_recordings_directory_is_not_followed(recordings, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"not a recording")
    session_id = uuid.uuid4()
    os.symlink(secret, recordings / str(session_id))
    assert recording_path(session_id) is None


def test_the_stored_recording_path_is_not_what_is_served(auditor_client, stream, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"something else")
    StreamSession.objects.filter(pk=stream.pk).update(recording_path=str(elsewhere))
    assert body(auditor_client.get(f"/audit/recordings/{stream.pk}/file")) == CONTENT


# --- who gets in ---------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["employee", "admin"])
def test_employees_and_admins_get_403_audited_on_every_recording_url(client, role, stream):
    user = person(role, f"someone-{role}")
    sign_in(client, user)
    for path in (f"/audit/recordings/{stream.pk}/", f"/audit/recordings/{stream.pk}/file",
                 f"/audit/recordings/{uuid.uuid4()}/", f"/audit/recordings/{uuid.uuid4()}/file",
                 f"/audit/sessions/desktop/{stream.pk}/"):
        response = client.get(path, headers={"range": "bytes=0-9"})
        assert response.status_code == 403, path
        assert CONTENT[:10] not in response.content
        refusal = AuditEvent.objects.filter(action="audit.forbidden").latest("seq")
        assert (refusal.actor, refusal.outcome, refusal.detail["path"]) == (user.username, "deny", path)
    assert not AuditEvent.objects.filter(action__in=["audit.playback", "audit.view"]).exists()


def test_the_session_owner_cannot_fetch_their_own_recording(client, employee, stream):
    sign_in(client, employee)
    assert client.get(f"/audit/recordings/{stream.pk}/file").status_code == 403


def test_signed_out_visitors_are_sent_to_sign_in(client, stream):
    response = client.get(f"/audit/recordings/{stream.pk}/file")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# --- serving the bytes ---------------------------------------------------------------------

def test_the_whole_recording_with_no_range(auditor_client, stream):
    response = auditor_client.get(f"/audit/recordings/{stream.pk}/file")
    assert response.status_code == 200
    assert body(response) == CONTENT
    assert response["Content-Length"] == str(len(CONTENT))
    assert response["Accept-Ranges"] == "bytes"
    assert response["ETag"] == f'"{stream.recording_sha256}"'
    assert response["Content-Type"] == "application/octet-stream"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in response["Cache-Control"]


@pytest.mark.parametrize(("header", "start", "end"), [
    ("bytes=0-9", 0, 9), ("bytes=10000-", 10000, len(CONTENT) - 1), ("bytes=-6", len(CONTENT) - 6, len(CONTENT) - 1),
    ("bytes=100-99999", 100, len(CONTENT) - 1),
])
def test_a_range_answers_206_with_exactly_those_bytes(auditor_client, stream, header, start, end):
    response = auditor_client.get(f"/audit/recordings/{stream.pk}/file", headers={"range": header})
    assert response.status_code == 206
    assert body(response) == CONTENT[start:end + 1]
    assert response["Content-Range"] == f"bytes {start}-{end}/{len(CONTENT)}"
    assert response["Content-Length"] == str(end - start + 1)


@pytest.mark.parametrize("header", ["bytes=20000-", "bytes=5-1", "bytes=0-1,4-5", "bytes=x-y"])
def test_a_bad_range_answers_416_with_the_size(auditor_client, stream, header):
    response = auditor_client.get(f"/audit/recordings/{stream.pk}/file", headers={"range": header})
    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{len(CONTENT)}"
    assert body(response) == b""


def test_if_range_with_another_version_gets_the_whole_file(auditor_client, stream):
    url = f"/audit/recordings/{stream.pk}/file"
    same = auditor_client.get(url, headers={"range": "bytes=0-3", "if-range": f'"{stream.recording_sha256}"'})
    assert same.status_code == 206
    changed = auditor_client.get(url, headers={"range": "bytes=0-3", "if-range": '"something-else"'})
    assert changed.status_code == 200 and body(changed) == CONTENT


def test_no_recording_on_disk_is_404(auditor_client, stream, recordings):
    (recordings / str(stream.pk)).unlink()
    assert auditor_client.get(f"/audit/recordings/{stream.pk}/").status_code == 404
    assert auditor_client.get(f"/audit/recordings/{stream.pk}/file").status_code == 404
    assert auditor_client.get(f"/audit/recordings/{uuid.uuid4()}/file").status_code == 404


def test_under_asgi_the_file_is_read_block_by_block(recordings):
    from portal.auditor.recordings import recording_response

    path = recordings / "big"
    path.write_bytes(os.urandom(700_000))
    response = recording_response(path, "bytes=1000-")
    assert isinstance(response, RecordingResponse)

    async def collect() -> list[bytes]:
        return [block async for block in response]

    blocks = asyncio.run(collect())
    assert len(blocks) == 3 and max(map(len, blocks)) <= RecordingResponse.block_size
    assert b"".join(blocks) == path.read_bytes()[1000:]
    response.close()


# --- audited once per playback -------------------------------------------------------------

def test_each_player_page_view_is_one_playback_event_and_its_ranges_add_none(auditor_client, stream):
    before = AuditEvent.objects.count()
    page = auditor_client.get(f"/audit/recordings/{stream.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert f'data-src="/audit/recordings/{stream.pk}/file"' in html
    assert 'src="/static/audit/player.js"' in html and "<script>" not in html
    assert "guacamole-common-js/dist/esm/guacamole-common.js" in html
    for start in range(0, len(CONTENT), 4096):
        assert auditor_client.get(f"/audit/recordings/{stream.pk}/file",
                                  headers={"range": f"bytes={start}-{start + 4095}"}).status_code == 206
    written = list(AuditEvent.objects.filter(seq__gt=before))
    assert [(e.action, e.actor, e.resource) for e in written] == [("audit.playback", "audrey", "ops-desktop")]
    assert written[0].detail == {"recording": str(stream.pk), "user": "erin", "sha256": stream.recording_sha256,
                                 "via": "player"}
    auditor_client.get(f"/audit/recordings/{stream.pk}/")
    assert AuditEvent.objects.filter(action="audit.playback").count() == 2
    session_page = auditor_client.get(f"/audit/sessions/desktop/{stream.pk}/").content.decode()
    assert "Played back 2 times" in session_page
    assert f'href="/audit/recordings/{stream.pk}/"' in session_page


def test_fetching_the_file_without_the_player_is_audited_too(auditor_client, stream):
    auditor_client.get(f"/audit/recordings/{stream.pk}/file", headers={"range": "bytes=0-9"})
    auditor_client.get(f"/audit/recordings/{stream.pk}/file", headers={"range": "bytes=10-19"})
    events = AuditEvent.objects.filter(action="audit.playback")
    assert [e.detail["via"] for e in events] == ["file"]
