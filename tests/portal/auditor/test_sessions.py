"""The session log: web sessions from access records, desktop sessions with their events."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from portal.audit.chain import record
from portal.audit.models import AuditEvent
from portal.auditor.sessions import (
    AccessRow,
    SessionFilter,
    group_proxy_sessions,
    proxy_session,
    proxy_sessions,
    strip_terminal_codes,
)
from streaming.desktop.live import format_duration
from streaming.desktop.models import StreamSession
from streaming.proxy.models import AccessRecord
from tests.conftest import sign_in
from tests.portal.auditor.conftest import person
from tiers.models import Resource, Tier

pytestmark = pytest.mark.django_db

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def desktop(db) -> Resource:
    tier = Tier.objects.create(name="high", rank=20, access_mode="stream", recording=True)
    return Resource.objects.create(slug="ops-desktop", name="Ops desktop", kind="vnc", upstream="127.0.0.1:5900",
                                   tier=tier)


def stream_session(user, resource, *, minutes_ago: int = 10, live: bool = False, **fields) -> StreamSession:
    started = timezone.now() - timedelta(minutes=minutes_ago)
    values = dict(user=user, resource=resource, tier_name=resource.tier.name, created_at=started,
                  started_at=started, obligations={"record": True}, client_address="10.0.0.7",
                  recording_path="/var/recordings/somewhere")
    if live:
        values["state"] = StreamSession.State.LIVE
    else:
        values.update(state=StreamSession.State.ENDED, ended_at=started + timedelta(minutes=3, seconds=7),
                      end_reason="closed", ended_by=user.username, bytes_to_browser=123_456, bytes_from_browser=789)
    values.update(fields)
    return StreamSession.objects.create(**values)


def row(i: int, minutes: float, actor: str = "erin", resource: str = "wiki", decision: str = "allow") -> AccessRow:
    return AccessRow(i, T0 + timedelta(minutes=minutes), actor, resource, decision, 10, 100)


# --- web sessions: the grouping rule -------------------------------------------------------

def test_a_pause_longer_than_thirty_minutes_starts_a_new_web_session():
    rows = [row(1, 0), row(2, 10), row(3, 40), row(4, 70.01), row(5, 71, decision="deny"),
            row(6, 72, decision="step_up")]
    sessions = list(group_proxy_sessions(rows))
    assert [(s.first_id, s.requests) for s in sessions] == [(1, 3), (4, 3)]
    assert sessions[0].last == T0 + timedelta(minutes=40)  # exactly 30 minutes apart: the same session
    assert (sessions[1].denials, sessions[1].step_ups) == (1, 1)
    assert (sessions[0].bytes_in, sessions[0].bytes_out) == (30, 300)


def test_another_user_or_resource_is_another_web_session():
    rows = [row(1, 0, actor="bob"), row(2, 1, actor="erin"), row(3, 2, actor="erin", resource="zeta")]
    assert [(s.actor, s.resource) for s in group_proxy_sessions(rows)] == [
        ("bob", "wiki"), ("erin", "wiki"), ("erin", "zeta")]


def _access(actor: str, minutes: float, decision: str = "allow", resource: str = "wiki",
            hours_ago: float = 5) -> AccessRecord:
    return AccessRecord.objects.create(
        actor=actor, resource=resource, method="GET", path=f"/page/{minutes}", status=200 if decision == "allow"
        else 403, decision=decision, bytes_in=0, bytes_out=1000, duration_ms=3.0,
        time=timezone.now() - timedelta(hours=hours_ago) + timedelta(minutes=minutes))


def test_web_sessions_from_the_database_newest_first_and_anonymous_left_out(db):
    for minutes in (0, 5, 10):
        _access("erin", minutes)
    _access("erin", 100, decision="deny")
    _access("", 101)
    listing = proxy_sessions(SessionFilter())
    assert [(s.actor, s.requests, s.denials) for s in listing.sessions] == [("erin", 1, 1), ("erin", 3, 0)]
    assert not listing.truncated


def test_the_scan_limit_is_said_not_hidden(db):
    for minutes in range(5):
        _access("erin", minutes)
    listing = proxy_sessions(SessionFilter(), limit=3)
    assert listing.truncated and listing.scanned == 3


def test_a_web_session_is_found_from_any_of_its_requests(db):
    first = _access("erin", 0)
    middle = _access("erin", 20)
    _access("erin", 45)
    _access("erin", 200)  # the next session
    _access("bob", 21)
    found = proxy_session(middle.pk)
    assert found.session.first_id == first.pk
    assert found.session.requests == 3
    assert found.records[0].pk == first.pk and len(found.records) == 3
    assert proxy_session(999_999) is None


# --- who gets in ---------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["employee", "admin"])
def test_only_auditors_see_sessions_everyone_else_gets_403_audited(client, role, desktop, employee):
    stream = stream_session(employee, desktop)
    access = _access("erin", 0)
    user = person(role, f"someone-{role}")
    sign_in(client, user)
    for path in ("/audit/sessions/", f"/audit/sessions/desktop/{stream.pk}/", f"/audit/sessions/proxy/{access.pk}/"):
        response = client.get(path)
        assert response.status_code == 403, path
        refusal = AuditEvent.objects.filter(action="audit.forbidden").latest("seq")
        assert (refusal.actor, refusal.detail["path"]) == (user.username, path)
    assert not AuditEvent.objects.filter(action="audit.view").exists()


# --- the session log -----------------------------------------------------------------------

def test_the_log_lists_desktop_sessions_with_their_clipboard_and_file_events(auditor_client, auditor, desktop,
                                                                             employee):
    stream = stream_session(employee, desktop)
    other = stream_session(employee, desktop, minutes_ago=60)
    for action, outcome in [("desktop.clipboard.out", "allowed"), ("desktop.clipboard.in", "denied"),
                            ("desktop.file.transfer", "denied")]:
        record(action, outcome=outcome, actor="erin", resource="ops-desktop",
               detail={"session": str(stream.pk), "direction": "out"})
    record("desktop.clipboard.out", outcome="allowed", actor="erin", resource="ops-desktop",
           detail={"session": str(other.pk)})
    before = AuditEvent.objects.count()
    response = auditor_client.get("/audit/sessions/")
    assert response.status_code == 200
    rows = response.context["desktop_rows"]
    assert [s.pk for s, _, _ in rows] == [stream.pk, other.pk]
    counts = rows[0][1]
    assert (counts.clipboard, counts.files, counts.denied) == (2, 1, 2)
    assert rows[0][2] == "3 min 07 s"
    body = response.content.decode()
    assert f'href="/audit/sessions/desktop/{stream.pk}/"' in body
    assert f'href="/audit/recordings/{stream.pk}/"' in body
    assert "Closed by the user" in body and "120.6\xa0KB" in body
    seen = AuditEvent.objects.filter(seq__gt=before)
    assert [(e.action, e.actor, e.detail["page"]) for e in seen] == [("audit.view", auditor.username, "sessions")]


def test_the_log_filters_by_user_resource_time_and_kind(auditor_client, desktop, employee):
    bob = person("employee", "bob")
    mine = stream_session(employee, desktop, minutes_ago=30)
    stream_session(bob, desktop, minutes_ago=5)
    _access("erin", 0)
    _access("bob", 0)

    def listed(query: str) -> tuple[list, list]:
        context = auditor_client.get(f"/audit/sessions/?{query}").context
        desktops = [s.user.username for s, _, _ in context.get("desktop_rows", [])]
        webs = [p.actor for p in context["proxy_page"].object_list] if context.get("proxy_page") else []
        return desktops, webs

    assert listed("user=erin") == (["erin"], ["erin"])
    desktops, webs = listed("resource=wiki")
    assert desktops == [] and sorted(webs) == ["bob", "erin"]
    assert listed("kind=desktop&user=bob") == (["bob"], [])
    until = (mine.created_at + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    assert listed(f"kind=desktop&until={until}") == (["erin"], [])
    since = (timezone.now() - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S")
    assert listed(f"kind=web&since={since}") == ([], [])
    response = auditor_client.get("/audit/sessions/?since=2025-02-01T00:00&until=2025-01-01T00:00")
    assert response.status_code == 400


def test_the_log_pages(auditor_client, desktop, employee, settings):
    settings.PORTAL_AUDIT_PAGE_SIZE = 2
    made = [stream_session(employee, desktop, minutes_ago=m) for m in (1, 2, 3)]
    first = auditor_client.get("/audit/sessions/?kind=desktop")
    assert [s.pk for s, _, _ in first.context["desktop_rows"]] == [made[0].pk, made[1].pk]
    assert "dpage=2" in first.content.decode()
    second = auditor_client.get("/audit/sessions/?kind=desktop&dpage=2")
    assert [s.pk for s, _, _ in second.context["desktop_rows"]] == [made[2].pk]


def test_the_log_lists_web_sessions_and_their_page_shows_requests_and_denials(auditor_client, auditor):
    first = _access("erin", 0, hours_ago=0.05)
    denial = record("decision", outcome="deny", actor="erin", resource="wiki",
                    reasons=[{"rule": "network_zone", "message": "Not from this network."}])
    _access("erin", 0.5, decision="deny", hours_ago=0)
    record("decision", outcome="deny", actor="bob", resource="wiki")
    body = auditor_client.get("/audit/sessions/?kind=web").content.decode()
    assert f'href="/audit/sessions/proxy/{first.pk}/"' in body
    before = AuditEvent.objects.count()
    response = auditor_client.get(f"/audit/sessions/proxy/{first.pk}/")
    assert response.status_code == 200
    assert response.context["session"].requests == 2 and response.context["session"].denials == 1
    assert "/page/0.5" in response.content.decode()
    assert [e.seq for e in response.context["timeline"]] == [denial.seq]
    assert "Not from this network." in response.content.decode()
    seen = AuditEvent.objects.get(seq__gt=before)
    assert (seen.action, seen.detail["page"], seen.detail["user"]) == ("audit.view", "proxy_session", "erin")
    assert auditor_client.get("/audit/sessions/proxy/999999/").status_code == 404


# --- one desktop session -------------------------------------------------------------------

def test_the_session_page_shows_the_decision_before_it_and_its_own_events_only(auditor_client, auditor, desktop,
                                                                               employee):
    decision = record("decision", outcome="allow", actor="erin", resource="ops-desktop",
                      detail={"action": "desktop.open", "tier": "high"})
    stream = stream_session(employee, desktop, minutes_ago=0, started_at=timezone.now() + timedelta(seconds=1))
    start = record("desktop.start", outcome="success", actor="erin", resource="ops-desktop",
                   detail={"session": str(stream.pk)})
    clip = record("desktop.clipboard.out", outcome="denied", actor="erin", resource="ops-desktop",
                  detail={"session": str(stream.pk), "direction": "out", "control": "deny"})
    stranger = record("desktop.start", outcome="success", actor="erin", resource="ops-desktop",
                      detail={"session": str(uuid.uuid4())})
    before = AuditEvent.objects.count()
    response = auditor_client.get(f"/audit/sessions/desktop/{stream.pk}/")
    assert response.status_code == 200
    assert [e.seq for e in response.context["timeline"]] == [decision.seq, start.seq, clip.seq]
    assert stranger.seq not in [e.seq for e in response.context["timeline"]]
    body = response.content.decode()
    assert f'/audit/export.csv?session={stream.pk}' in body
    assert "not in the recordings directory" in body  # recorded, but no file here
    seen = AuditEvent.objects.get(seq__gt=before)
    assert (seen.action, seen.detail) == ("audit.view", {"page": "desktop_session", "target": str(stream.pk)})
    assert auditor_client.get(f"/audit/sessions/desktop/{uuid.uuid4()}/").status_code == 404


def test_an_ssh_typescript_is_shown_as_escaped_searchable_text_with_a_cap(auditor_client, desktop, employee,
                                                                          settings, tmp_path, monkeypatch):
    settings.PORTAL_RECORDINGS_DIR = tmp_path
    stream = stream_session(employee, desktop)
    text = "erin@host:~$ echo <script>alert(1)</script>\r\n\x1b[01;32mgreen\x1b[0m done\r\n" + "x" * 400
    (tmp_path / f"{stream.pk}.typescript").write_bytes(text.encode())
    monkeypatch.setattr("portal.auditor.sessions.TYPESCRIPT_LIMIT", 100)
    body = auditor_client.get(f"/audit/sessions/desktop/{stream.pk}/").content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and "<script>alert" not in body
    assert "green done" in body and "\x1b" not in body
    assert "Only the first" in body
    assert 'src="/static/audit/typescript.js"' in body


def test_terminal_codes_are_removed_and_text_kept():
    assert strip_terminal_codes("a\x1b[1;31mred\x1b[0m\r\nb\x1b]0;title\x07c\x08") == "ared\nbc"


def test_durations_read_as_people_say_them():
    assert [format_duration(timedelta(seconds=s)) for s in (5, 187, 7500)] == ["5 s", "3 min 07 s", "2 h 05 min"]
    assert format_duration(None) == "—"


# --- the front page and the export ---------------------------------------------------------

def test_the_front_page_lists_live_desktop_sessions(auditor_client, desktop, employee):
    body = auditor_client.get("/audit/").content.decode()
    assert "Live desktop sessions" not in body  # the panel shows only while someone is connected
    live = stream_session(employee, desktop, live=True)
    stream_session(employee, desktop)  # ended: not listed
    body = auditor_client.get("/audit/").content.decode()
    assert body.count('data-session="') == 1
    assert f'data-session="{live.pk}"' in body and f'href="/audit/sessions/desktop/{live.pk}/"' in body


def test_the_export_takes_a_session_filter(auditor_client, desktop, employee):
    stream = stream_session(employee, desktop)
    mine = [record("desktop.start", outcome="success", actor="erin", resource="ops-desktop",
                   detail={"session": str(stream.pk)}),
            record("desktop.end", outcome="closed", actor="erin", resource="ops-desktop",
                   detail={"session": str(stream.pk)})]
    record("desktop.start", outcome="success", actor="erin", resource="ops-desktop",
           detail={"session": str(uuid.uuid4())})
    response = auditor_client.get(f"/audit/export.csv?session={stream.pk}")
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [int(r["metadata.sequence"]) for r in rows] == [e.seq for e in mine]
    assert f'"session":"{stream.pk}"' in response["X-Export-Manifest"]
    assert auditor_client.get("/audit/export.csv?session=../../etc").status_code == 400
    search = auditor_client.get(f"/audit/events/?session={stream.pk}")
    assert [e.seq for e in search.context["page"].events] == [e.seq for e in reversed(mine)]
