"""My apps: what a user may see, by tier, and what each card needs to open now; the denial page."""

from __future__ import annotations

import re
import time

import pytest
from django.test import RequestFactory

from portal.audit.models import AuditEvent
from tests.tiers.factories import NetworkZoneFactory, ResourceFactory, TierFactory, share
from tiers.models import AccessRequest
from tiers.pages import render_denial
from tiers.types import Decision, Outcome, Reason

pytestmark = pytest.mark.django_db


def cards(response) -> dict[str, str]:
    """Each card's HTML by resource slug."""
    html = response.content.decode()
    return {m.group(1): m.group(0) for m in re.finditer(
        r'<li class="app" data-slug="([^"]+)".*?</li>', html, re.S)}


@pytest.fixture
def catalog(db):
    low = TierFactory(name="low", rank=10, description="Everyday apps")
    high = TierFactory(name="high", rank=20, access_mode="stream", mfa_read=900, mfa_sensitive=0)
    return {
        "wiki": ResourceFactory(slug="wiki", name="Wiki", tier=low),
        "ops": ResourceFactory(slug="ops", name="Ops desktop", kind="vnc", upstream="127.0.0.1:5900",
                               tier=high),
        "payroll": ResourceFactory(slug="payroll", name="Payroll", tier=low, groups=["finance"]),
    }


def test_anonymous_visitor_is_sent_to_sign_in(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_nothing_shared_shows_the_friendly_empty_state(client, signed_in_employee):
    response = client.get("/")
    assert response.status_code == 200
    assert b"No apps yet" in response.content


def test_only_visible_resources_appear_grouped_by_tier_least_sensitive_first(
        client, signed_in_employee, catalog):
    response = client.get("/")
    html = response.content.decode()
    assert set(cards(response)) == {"wiki", "ops"}
    assert "Payroll" not in html
    assert [g.tier.name for g in response.context["groups"]] == ["low", "high"]
    assert html.index('id="tier-low"') < html.index('id="tier-high"')
    assert 'class="badge tier-high"' in html


def test_a_resource_shared_directly_with_the_user_appears(client, signed_in_employee, catalog):
    share(catalog["payroll"], signed_in_employee)
    assert "payroll" in cards(client.get("/"))


def test_a_web_app_that_may_open_links_straight_through_the_proxy(client, signed_in_employee, catalog):
    card = cards(client.get("/"))["wiki"]
    assert 'href="/apps/wiki/"' in card
    assert "Opens directly, through the portal" in card
    assert 'data-outcome="allow"' in card


def test_a_desktop_opens_isolated_and_says_a_code_will_be_asked(client, signed_in_employee, catalog):
    card = cards(client.get("/"))["ops"]
    assert 'href="/desktop/ops/"' in card
    assert "isolated desktop" in card
    assert "Needs a code for each action" in card


def test_a_web_app_of_a_streamed_tier_opens_as_an_isolated_desktop(client, signed_in_employee):
    ResourceFactory(slug="crm", tier=TierFactory(name="high", rank=20, access_mode="stream"))
    card = cards(client.get("/"))["crm"]
    assert 'href="/desktop/crm/"' in card
    assert 'data-outcome="isolate"' in card


def test_a_stale_code_shows_needs_a_fresh_code(client, signed_in_employee):
    ResourceFactory(slug="hr", tier=TierFactory(name="fresh", mfa_read=60))
    session = client.session
    session["mfa_time"] = int(time.time()) - 600
    session.save()
    card = cards(client.get("/"))["hr"]
    assert "Needs a fresh code" in card
    assert "Enter a code from your authenticator app." in card
    assert 'href="/apps/hr/"' in card  # opening asks for the code on the way


def test_from_the_wrong_network_says_connect_via_an_allowed_network(client, signed_in_employee):
    vpn = NetworkZoneFactory(name="vpn", cidrs="10.8.0.0/16")
    ResourceFactory(slug="intranet", tier=TierFactory(name="office-only", zones=[vpn]))
    card = cards(client.get("/"))["intranet"]
    assert "Not from this network" in card
    assert "Connect from an allowed network (vpn)" in card
    assert "href=" not in card.split('class="app-actions"')[1].split("</p>")[0]


def test_a_tier_that_needs_approval_offers_request_access(client, signed_in_employee):
    ResourceFactory(slug="vault", tier=TierFactory(name="critical", approval_required=True))
    card = cards(client.get("/"))["vault"]
    assert "Needs approval" in card
    assert 'href="/requests/?resource=vault"' in card
    assert "Request access" in card


def test_a_pending_request_is_shown_instead_of_request_access(client, signed_in_employee):
    vault = ResourceFactory(slug="vault", tier=TierFactory(name="critical", approval_required=True))
    AccessRequest.objects.create(requester=signed_in_employee, resource=vault, justification="incident")
    card = cards(client.get("/"))["vault"]
    assert "Request pending since" in card
    assert "?resource=vault" not in card


def test_previewing_my_apps_writes_nothing_to_the_audit_trail(client, signed_in_employee, catalog):
    before = AuditEvent.objects.count()
    client.get("/")
    assert AuditEvent.objects.count() == before


def test_nav_offers_requests_to_everyone_and_manage_only_to_admins(client, signed_in_employee):
    html = client.get("/").content.decode()
    assert 'href="/requests/"' in html
    assert 'href="/manage/"' not in html


# --- the denial page -----------------------------------------------------------------------------

def _request(user):
    request = RequestFactory().get("/apps/vault/", secure=True)
    request.user = user
    request.request_id = "req-123"
    return request


def test_denial_page_says_why_and_what_to_do(employee):
    vault = ResourceFactory(slug="vault", name="Vault", tier=TierFactory(name="critical"))
    decision = Decision(Outcome.DENY, (
        Reason("approval_required", "The critical tier needs an approved, time-boxed access request.",
               {"tier": "critical"}, "Request access with a short justification; an admin approves it."),
        Reason("entitled", "Shared with you through employee.", {"groups": ["employee"]}),
    ))
    response = render_denial(_request(employee), vault, decision)
    html = response.content.decode()
    assert response.status_code == 403
    assert "You can't open Vault right now" in html
    assert "Needs approval" in html
    assert "needs an approved, time-boxed access request" in html
    assert "What to do" in html and "Request access with a short justification" in html
    assert 'href="/requests/?resource=vault"' in html
    assert "Shared with you through employee." in html  # what was checked on the way
    assert "req-123" in html


def test_denial_page_for_the_network_has_no_request_button_and_takes_a_status(employee):
    wiki = ResourceFactory(slug="wiki", name="Wiki")
    decision = Decision(Outcome.DENY, (Reason(
        "network_zone_not_allowed", "The low tier cannot be used from the network you are on (internet).",
        {"zone": "internet"}, "Connect from an allowed network (vpn), for example the office or the VPN."),))
    response = render_denial(_request(employee), wiki, decision, status=404)
    html = response.content.decode()
    assert response.status_code == 404
    assert "Not from this network" in html
    assert "Connect from an allowed network (vpn)" in html
    assert "/requests/?resource=" not in html


def test_isolate_denial_links_to_the_isolated_desktop(employee):
    crm = ResourceFactory(slug="crm", name="CRM")
    decision = Decision(Outcome.ISOLATE, (Reason(
        "isolation_required", "The high tier only allows this app inside an isolated desktop.",
        {"tier": "high"}, "Open it from My apps as an isolated session."),))
    html = render_denial(_request(employee), crm, decision).content.decode()
    assert 'href="/desktop/crm/"' in html
    assert "opens in an isolated desktop" in html


# --- where each role lands at / -------------------------------------------------------------------

def _signed_in(client, role: str, username: str):
    from tests.conftest import sign_in
    from tests.factories import UserFactory, enrol_totp

    user = UserFactory(username=username, role=role)
    user.totp = enrol_totp(user)
    sign_in(client, user)
    return user


def test_an_auditor_lands_on_the_audit_workspace_not_an_empty_my_apps(client):
    _signed_in(client, "auditor", "audrey")
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/audit/"


def test_an_admin_lands_on_an_overview_of_what_waits_with_counts_and_links(client, catalog):
    from django.contrib.auth import get_user_model

    from tests.factories import UserFactory

    admin = _signed_in(client, "admin", "adam")
    share(catalog["ops"], admin)
    bob = UserFactory(username="bob", role="employee")
    AccessRequest.objects.create(requester=bob, resource=catalog["ops"], justification="fix prod",
                                 duration_seconds=3600)
    UserFactory(username="mallory", role="employee", is_active=False)
    UserFactory(username="trudy", role="employee", is_active=False)
    assert get_user_model().objects.filter(is_active=False).count() == 2
    html = client.get("/").content.decode()
    assert "<h1>Overview</h1>" in html
    for key, count, words, link in [
        ("access-requests", 1, "access request waits for a decision", "/manage/requests/"),
        ("policy-changes", 0, "policy changes wait for a second admin", "/manage/"),
        ("live-sessions", 0, "desktop sessions are live", "/desktop/-/live/"),
        ("locked-people", 2, "people are locked", "/manage/people/"),
    ]:
        item = re.search(rf'<li class="attention-item[^"]*" data-key="{key}" data-count="(\d+)">(.*?)</li>',
                         html, re.S)
        assert item, key
        assert int(item.group(1)) == count
        assert f'<span class="attention-count">{count}</span> <span class="attention-text">{words}</span>' \
            in item.group(2)
        assert f'href="{link}' in item.group(2)
    assert 'data-slug="ops"' in html  # her own apps, below


def test_an_employee_lands_on_my_apps(client, signed_in_employee):
    html = client.get("/").content.decode()
    assert "<h1>My apps</h1>" in html and "attention" not in html


def test_a_code_asked_on_the_way_is_a_note_not_a_warning(client, signed_in_employee, catalog):
    share(catalog["ops"], signed_in_employee)
    card = cards(client.get("/"))["ops"]
    assert 'class="note" role="note"' in card and "Needs a code for each action" in card
    assert 'class="missing"' not in card


def test_my_apps_lays_tiers_out_side_by_side_in_a_wrapping_grid(client, signed_in_employee, catalog):
    html = client.get("/").content.decode()
    assert '<div class="tier-groups">' in html


# --- no request for what one already holds --------------------------------------------------------

def test_an_employee_cannot_request_access_she_already_holds_a_grant_for(db):
    from django.utils import timezone

    from tests.tiers.factories import client_for, person
    from tiers import jit
    from tiers.models import AccessGrant

    tier = TierFactory(name="critical", rank=30, approval_required=True, mfa_read=None)
    vault = ResourceFactory(slug="vault", name="Vault", tier=tier)
    erin = person("erin")
    ada = person("ada", "admin")
    employee = client_for(erin)
    assert employee.post("/requests/", {"resource": "vault", "justification": "rotate keys",
                                        "duration": 3600}).status_code == 302
    jit.approve(AccessRequest.objects.get(), ada)
    assert AccessGrant.objects.filter(user=erin, resource=vault).exists()

    form = employee.get("/requests/").content.decode()
    assert '<option value="vault"' not in form  # nothing to ask for
    response = employee.post("/requests/", {"resource": "vault", "justification": "again",
                                            "duration": 3600})
    assert response.status_code == 400
    assert AccessRequest.objects.count() == 1
    with pytest.raises(jit.AlreadyGranted, match="You already hold access to Vault until"):
        jit.request_access(erin, vault, "again", 3600, now=timezone.now())
    refusal = AuditEvent.objects.filter(action="access.request", outcome="refused").latest("seq")
    assert refusal.reasons[0]["rule"] == "already_granted"
