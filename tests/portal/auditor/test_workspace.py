"""The auditor workspace: who gets in, that reading leaves a trace, search, detail, front page."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection
from django.utils import timezone

from portal.audit.chain import record
from portal.audit.models import AuditEvent, ChainVerification
from portal.audit.tasks import verify_and_store
from portal.auditor.search import AuditFilter, filter_events, search_page
from tests.conftest import sign_in
from tests.portal.auditor.conftest import person

pytestmark = pytest.mark.django_db

AUDIT_PAGES = [
    "/audit/", "/audit/events/", "/audit/events/1/", "/audit/export.csv", "/audit/export.jsonl",
    "/audit/export/manifest.json?format=csv&head=1",
]


def tamper(seq: int, **values: str) -> None:
    """Change an event behind the ORM's back, as someone with database access could."""
    sets = ", ".join(f"{column} = %s" for column in values)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        try:
            cursor.execute(f"UPDATE audit_auditevent SET {sets} WHERE seq = %s", [*values.values(), seq])
        finally:
            if connection.vendor == "postgresql":
                cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")


# --- who gets in ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", AUDIT_PAGES)
@pytest.mark.parametrize("role", ["employee", "admin"])
def test_only_auditors_get_in_everyone_else_gets_403_and_the_refusal_is_audited(client, role, path):
    user = person(role, f"someone-{role}")
    sign_in(client, user)
    response = client.get(path)
    assert response.status_code == 403
    assert b"for auditors" in response.content
    refusal = AuditEvent.objects.filter(action="audit.forbidden").latest("seq")
    assert (refusal.actor, refusal.outcome) == (user.username, "deny")
    assert refusal.detail["path"] == path.split("?")[0]
    assert refusal.reasons[0]["values"] == {"permission": "accounts.view_audit"}
    assert not AuditEvent.objects.filter(action__in=["audit.view", "audit.export"]).exists()


@pytest.mark.parametrize("path", AUDIT_PAGES)
def test_an_auditor_reaches_every_page_and_each_visit_is_audited(auditor_client, auditor, path):
    before = AuditEvent.objects.count()
    response = auditor_client.get(path)
    assert response.status_code == 200, path
    written = AuditEvent.objects.filter(seq__gt=before, actor=auditor.username)
    assert written.filter(action__in=["audit.view", "audit.export"]).count() == 1
    assert "no-store" in response["Cache-Control"]


@pytest.mark.parametrize("path", AUDIT_PAGES)
def test_anonymous_visitors_are_sent_to_sign_in(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
@pytest.mark.parametrize("path", ["/audit/", "/audit/events/", "/audit/events/1/", "/audit/export.csv"])
def test_the_workspace_is_read_only_by_construction(auditor_client, method, path):
    response = getattr(auditor_client, method)(path)
    assert response.status_code == 405
    assert response["Allow"] == "GET"


def test_a_password_alone_does_not_open_the_workspace(client, auditor):
    sign_in(client, auditor, with_mfa=False)
    response = client.get("/audit/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/mfa/verify/")


# --- search --------------------------------------------------------------------------------

@pytest.fixture
def trail(db):
    """A small, varied trail; returns its events by name."""
    decision = {"action": "http", "class": "read"}
    return {
        "alice_low_allow": record("decision", outcome="allow", actor="alice", resource="wiki", zone="office",
                                  client_address="10.0.0.5", detail={**decision, "tier": "low"},
                                  reasons=[{"rule": "allow", "message": "All checks passed."}]),
        "bob_high_deny": record("decision", outcome="deny", actor="bob", resource="payroll", zone="internet",
                                client_address="203.0.113.9", detail={**decision, "tier": "high"},
                                reasons=[{"rule": "zone_not_allowed", "message": "Not from the internet.",
                                          "values": {"zone": "internet"}}]),
        "alice_high_step_up": record("decision", outcome="step_up", actor="alice", resource="payroll",
                                     zone="office", detail={**decision, "tier": "high"},
                                     reasons=[{"rule": "mfa_stale", "message": "Code older than 5 min."}]),
        "bob_login_failure": record("login.password", outcome="failure", actor="bob",
                                    client_address="203.0.113.9"),
        "carol_critical_deny": record("decision", outcome="deny", actor="carol", resource="vault",
                                      zone="vpn", detail={**decision, "tier": "critical"},
                                      reasons=[{"rule": "approval_required",
                                                "message": "Needs an approved request."}]),
    }


SEARCHES = [
    (AuditFilter(), ["carol_critical_deny", "bob_login_failure", "alice_high_step_up", "bob_high_deny",
                     "alice_low_allow"]),
    (AuditFilter(actor="alice"), ["alice_high_step_up", "alice_low_allow"]),
    (AuditFilter(resource="payroll"), ["alice_high_step_up", "bob_high_deny"]),
    (AuditFilter(outcome="deny"), ["carol_critical_deny", "bob_high_deny"]),
    (AuditFilter(action="login.password"), ["bob_login_failure"]),
    (AuditFilter(zone="office"), ["alice_high_step_up", "alice_low_allow"]),
    (AuditFilter(tier="high"), ["alice_high_step_up", "bob_high_deny"]),
    (AuditFilter(tier="high", outcome="deny"), ["bob_high_deny"]),
    (AuditFilter(q="approved request"), ["carol_critical_deny"]),
    (AuditFilter(q="ZONE_NOT_ALLOWED"), ["bob_high_deny"]),
    (AuditFilter(actor="nobody"), []),
]


@pytest.mark.parametrize(("criteria", "expected"), SEARCHES)
def test_search_filters(trail, criteria, expected):
    page = search_page(criteria, size=50)
    assert [e.seq for e in page.events] == [trail[name].seq for name in expected]


def test_search_by_time_range(trail):
    middle = trail["alice_high_step_up"].time
    later = filter_events(AuditFilter(since=middle)).order_by("seq")
    assert [e.seq for e in later] == [trail[n].seq for n in
                                      ("alice_high_step_up", "bob_login_failure", "carol_critical_deny")]
    earlier = filter_events(AuditFilter(until=middle)).order_by("seq")
    assert [e.seq for e in earlier] == [trail["alice_low_allow"].seq, trail["bob_high_deny"].seq]


def test_keyset_pages_walk_the_whole_result_once_each_way(db):
    seqs = [record("decision", outcome="deny", actor="pat", resource=f"r{i}").seq for i in range(11)]
    record("login.password", outcome="success", actor="other")
    criteria = AuditFilter(actor="pat")
    seen, pages, page = [], [], search_page(criteria, size=4)
    while True:
        pages.append([e.seq for e in page.events])
        seen += pages[-1]
        if page.older is None:
            break
        page = search_page(criteria, before=page.older, size=4)
    assert seen == sorted(seqs, reverse=True)
    assert [len(p) for p in pages] == [4, 4, 3]
    back = search_page(criteria, after=page.newer, size=4)
    assert [e.seq for e in back.events] == pages[1]
    assert search_page(criteria, after=back.newer, size=4).events == search_page(criteria, size=4).events


def test_search_page_shows_results_query_time_links_and_exports(auditor_client, trail):
    response = auditor_client.get("/audit/events/", {"outcome": "deny", "tier": "high"})
    body = response.content.decode()
    assert response.status_code == 200
    assert f'href="/audit/events/{trail["bob_high_deny"].seq}/"' in body
    assert f'href="/audit/events/{trail["carol_critical_deny"].seq}/"' not in body
    assert "query took" in body
    assert 'href="/audit/export.csv?outcome=deny&amp;tier=high"' in body
    assert 'href="/audit/export.jsonl?outcome=deny&amp;tier=high"' in body
    seen = AuditEvent.objects.filter(action="audit.view").latest("seq")
    assert seen.detail == {"page": "search", "filter": {"outcome": "deny", "tier": "high"}}


def test_search_page_pages_with_cursors(auditor_client, settings, db):
    settings.PORTAL_AUDIT_PAGE_SIZE = 2
    for i in range(5):
        record("decision", outcome="deny", actor="pat", resource=f"r{i}")
    first = auditor_client.get("/audit/events/", {"actor": "pat"}).content.decode()
    assert 'rel="next"' in first and 'rel="prev"' not in first
    older = search_page(AuditFilter(actor="pat"), size=2).older
    second = auditor_client.get("/audit/events/", {"actor": "pat", "before": older}).content.decode()
    assert 'rel="prev"' in second and "Newest</a>" in second


def test_a_bad_filter_is_explained_not_searched(auditor_client):
    response = auditor_client.get("/audit/events/", {"since": "2030-01-02T00:00", "until": "2030-01-01T00:00"})
    assert response.status_code == 400
    assert "“From” must be before “Until”" in response.content.decode()


# --- event detail --------------------------------------------------------------------------

def test_event_detail_shows_reasons_detail_and_both_chain_links(auditor_client, trail):
    event = trail["bob_high_deny"]
    body = auditor_client.get(f"/audit/events/{event.seq}/").content.decode()
    assert "Not from the internet." in body and "zone_not_allowed" in body
    assert "203.0.113.9" in body and "&quot;tier&quot;: &quot;high&quot;" in body
    assert event.hash in body and event.prev_hash in body
    assert "matches this event's content" in body and f"links to #{event.seq - 1}" in body


def test_event_detail_shows_an_event_changed_after_it_was_written(auditor_client, trail):
    event = trail["bob_high_deny"]
    tamper(event.seq, outcome="allow")
    body = auditor_client.get(f"/audit/events/{event.seq}/").content.decode()
    assert "changed after it was written" in body


def test_an_unknown_event_is_404(auditor_client):
    assert auditor_client.get("/audit/events/999999/").status_code == 404


# --- front page ----------------------------------------------------------------------------

def test_front_page_charts_todays_denials_and_step_ups_by_tier(auditor_client, trail):
    yesterday = timezone.now() - timedelta(days=1)
    with mock.patch("portal.audit.chain.timezone.now", return_value=yesterday):
        record("decision", outcome="deny", actor="old", resource="payroll", detail={"tier": "high"})
    body = auditor_client.get("/audit/").content.decode()
    assert "2 denials, 1 step-up asked" in body
    assert '<svg class="bar-chart"' in body
    assert "high: 1 denied" in body and "high: 1 step-up" in body and "critical: 1 denied" in body
    assert "low:" not in body  # an allow is neither a denial nor a step-up


def test_front_page_says_when_the_chain_was_never_verified(auditor_client):
    body = auditor_client.get("/audit/").content.decode()
    assert "Not verified yet" in body
    assert "appear here once" not in body  # no placeholders for features that are not there


def test_front_page_shows_the_last_verification_and_a_break(auditor_client, trail):
    verified = verify_and_store()
    body = auditor_client.get("/audit/").content.decode()
    assert f"Verified up to event #{verified.head_seq}" in body and "Last verified" in body
    tamper(trail["bob_high_deny"].seq, reasons="[]")
    verify_and_store()
    body = auditor_client.get("/audit/").content.decode()
    assert "Broken: the trail was tampered with" in body
    assert f"event #{trail['bob_high_deny'].seq} was changed after it was written" in body


def test_the_auditor_is_never_told_intact_over_events_written_after_the_verification(auditor_client, trail):
    verified = verify_and_store()
    for _ in range(3):
        record("decision", outcome="allow", actor="later", resource="wiki")
    body = auditor_client.get("/audit/").content.decode()
    stamp = f"{verified.time:%Y-%m-%d %H:%M:%S} UTC"
    # The three decisions and this page's own audit.view event came after the verification.
    assert f"Verified up to event #{verified.head_seq} at {stamp}; 4 newer events not yet verified." in body
    assert 'data-chain-state="partly-verified"' in body
    assert "> Intact<" not in body


def test_the_auditor_reads_how_often_and_where_the_chain_is_verified_without_redis(auditor_client, trail,
                                                                                  settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True  # no broker: what the embedded default runs on
    verify_and_store()
    body = auditor_client.get("/audit/").content.decode()
    assert "The verification runs every 15 minutes, in the portal process itself" in body
    assert "the next run is due at" in body


def test_an_unverified_chain_says_how_many_events_wait(auditor_client, trail):
    body = auditor_client.get("/audit/").content.decode()
    assert f"{AuditEvent.objects.count()} events not yet verified." in body
    assert 'data-chain-state="unverified"' in body


def test_front_page_warns_when_verification_has_stopped(auditor_client, db):
    ChainVerification.objects.create(time=timezone.now() - timedelta(days=1), ok=True, checked=1, head_seq=1)
    body = auditor_client.get("/audit/").content.decode()
    assert "older than its schedule allows" in body


def test_front_page_lists_the_latest_events(auditor_client, trail):
    body = auditor_client.get("/audit/").content.decode()
    for event in trail.values():
        assert f'href="/audit/events/{event.seq}/"' in body


def test_other_features_add_front_page_sections_only_when_they_have_data(auditor_client, tmp_path, settings,
                                                                         monkeypatch):
    from portal.audit import panels

    monkeypatch.setattr(panels, "_PANELS", dict(panels._PANELS))
    (tmp_path / "live.html").write_text("<section><h2>Live desktop sessions</h2>{{ section.count }} open</section>")
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [*settings.TEMPLATES[0]["DIRS"], tmp_path]}]
    state = {"count": None}
    panels.register_panel("live", "live.html", lambda request: None if state["count"] is None else state)

    assert "Live desktop sessions" not in auditor_client.get("/audit/").content.decode()
    state["count"] = 3
    assert "Live desktop sessions</h2>3 open" in auditor_client.get("/audit/").content.decode()


def test_the_desktop_app_registers_its_own_live_sessions_panel():
    from portal.audit.panels import workspace_panels
    from streaming.desktop.live import auditor_panel

    panel = {p.key: p for p in workspace_panels()}["live_desktop_sessions"]
    assert (panel.template, panel.context) == ("audit/_live_sessions.html", auditor_panel)


def test_counts_on_the_audit_pages_read_as_proper_english(auditor_client, db):
    body = auditor_client.get("/audit/events/?action=mfa.verify").content.decode()
    assert "1 event on this page" in body  # the auditor's own sign-in
    body = auditor_client.get("/audit/events/").content.decode()
    assert f"{AuditEvent.objects.count()} events on this page" in body
    body = auditor_client.get("/audit/").content.decode()
    assert "0 denials, 0 step-ups asked" in body
