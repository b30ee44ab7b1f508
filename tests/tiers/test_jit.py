"""Just-in-time access: request, approve (never one's own), grant, expiry and revocation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from portal.audit.models import AuditEvent
from tests.tiers.factories import ResourceFactory, TierFactory, client_for, person, share
from tiers import jit
from tiers.context import gather
from tiers.decision import decide
from tiers.enforcement import load_resource
from tiers.models import AccessGrant, AccessRequest
from tiers.pages import open_action

pytestmark = pytest.mark.django_db


@pytest.fixture
def vault(db):
    tier = TierFactory(name="critical", rank=30, approval_required=True, mfa_read=None)
    return ResourceFactory(slug="vault", name="Vault", tier=tier)


@pytest.fixture
def erin(db):
    return person("erin")


@pytest.fixture
def ada(db):
    return person("ada", "admin")


def _decide_now(user, resource):
    resource = load_resource(resource.slug)
    return decide(gather(user, {"mfa_time": timezone.now().timestamp()}, "127.0.0.1", resource,
                         open_action(resource)))


def _ask(client, resource="vault", justification="Incident 4711: rotate the keys", duration=3600):
    return client.post("/requests/", {"resource": resource, "justification": justification,
                                      "duration": duration})


def test_request_approve_grant_then_the_decision_allows(vault, erin, ada):
    assert _decide_now(erin, vault).reasons[0].rule == "approval_required"

    employee = client_for(erin)
    assert employee.get("/requests/").status_code == 200
    response = _ask(employee)
    assert response.status_code == 302
    access_request = AccessRequest.objects.get()
    assert (access_request.requester, access_request.state, access_request.duration_seconds) == (
        erin, "pending", 3600)

    approver = client_for(ada)
    assert b"Incident 4711" in approver.get("/manage/requests/").content
    before = timezone.now()
    response = approver.post(f"/manage/requests/{access_request.pk}/approve/", {"note": "go ahead"})
    assert response.status_code == 302

    access_request.refresh_from_db()
    assert (access_request.state, access_request.decided_by, access_request.decision_note) == (
        "approved", ada, "go ahead")
    grant = AccessGrant.objects.get()
    assert (grant.user, grant.resource, grant.granted_by, grant.request) == (erin, vault, "ada", access_request)
    assert before + timedelta(seconds=3600) <= grant.expires_at <= timezone.now() + timedelta(seconds=3600)

    decision = _decide_now(erin, vault)
    assert decision.allowed
    assert "approved_grant" in [r.rule for r in decision.reasons]
    assert [e.action for e in AuditEvent.objects.filter(action__startswith="access.").order_by("seq")] == [
        "access.request", "access.approve"]

    page = employee.get("/requests/").content.decode()
    assert "Access you have now" in page and "Approved" in page
    assert 'href="/apps/vault/"' in employee.get("/").content.decode()


def test_an_approver_cannot_approve_their_own_request(vault, ada):
    share(vault, ada)
    approver = client_for(ada)
    _ask(approver)
    access_request = AccessRequest.objects.get()
    assert b"another approver must decide it" in approver.get("/manage/requests/").content

    for verdict in ("approve", "deny"):
        response = approver.post(f"/manage/requests/{access_request.pk}/{verdict}/")
        assert response.status_code == 403
        assert b"You cannot decide your own access request" in response.content
    access_request.refresh_from_db()
    assert access_request.state == "pending"
    assert not AccessGrant.objects.exists()
    refused = AuditEvent.objects.filter(action="access.approve", outcome="refused").get()
    assert refused.reasons[0]["rule"] == "self_decision"


def test_another_approver_can_decide_an_approvers_request(vault, ada):
    share(vault, ada)
    jit.request_access(ada, vault, "maintenance window", 900)
    client_for(person("grace", "admin")).post(
        f"/manage/requests/{AccessRequest.objects.get().pk}/approve/")
    assert AccessGrant.objects.get().granted_by == "grace"


def test_a_denied_request_shows_the_note_and_grants_nothing(vault, erin, ada):
    employee = client_for(erin)
    _ask(employee)
    access_request = AccessRequest.objects.get()
    client_for(ada).post(f"/manage/requests/{access_request.pk}/deny/", {"note": "use the staging vault"})
    access_request.refresh_from_db()
    assert access_request.state == "denied"
    assert not AccessGrant.objects.exists()
    assert AuditEvent.objects.filter(action="access.deny", outcome="success", actor="ada").exists()
    assert "use the staging vault" in employee.get("/requests/").content.decode()
    assert _decide_now(erin, vault).reasons[0].rule == "approval_required"


def test_a_request_is_decided_once(vault, erin, ada):
    access_request = jit.request_access(erin, vault, "why", 900)
    jit.approve(access_request, ada)
    with pytest.raises(jit.NotPending):
        jit.deny(access_request, person("grace", "admin"))
    assert AccessGrant.objects.count() == 1


def test_an_expired_grant_no_longer_allows(vault, erin, ada):
    grant = jit.approve(jit.request_access(erin, vault, "why", 900), ada)
    assert _decide_now(erin, vault).allowed
    grant.expires_at = timezone.now() - timedelta(seconds=1)
    grant.save()
    decision = _decide_now(erin, vault)
    assert not decision.allowed and decision.reasons[0].rule == "approval_required"


def test_revoking_a_grant_ends_access_and_is_audited(vault, erin, ada):
    grant = jit.approve(jit.request_access(erin, vault, "why", 3600), ada)
    approver = client_for(ada)
    assert f'data-grant="{grant.pk}"'.encode() in approver.get("/manage/requests/").content
    assert approver.post(f"/manage/grants/{grant.pk}/revoke/").status_code == 302
    grant.refresh_from_db()
    assert grant.revoked_at is not None
    assert not _decide_now(erin, vault).allowed
    event = AuditEvent.objects.get(action="access.revoke", outcome="success")
    assert (event.actor, event.resource, event.detail["user"]) == ("ada", "vault", "erin")
    with pytest.raises(jit.GrantInactive):
        jit.revoke(grant, ada)


def test_employees_cannot_reach_the_approval_pages(vault, erin):
    other = person("frank")
    access_request = jit.request_access(erin, vault, "why", 900)
    client = client_for(other)
    assert client.get("/manage/requests/").status_code == 403
    assert client.post(f"/manage/requests/{access_request.pk}/approve/").status_code == 403
    with pytest.raises(jit.NotApprover):
        jit.approve(access_request, other)
    access_request.refresh_from_db()
    assert access_request.state == "pending"


@pytest.mark.parametrize(("data", "message"), [
    ({"justification": "   "}, b"This field is required"),
    ({"justification": "x" * 1001}, b"at most 1000 characters"),
    ({"duration": 86400}, b"Select a valid choice"),
    ({"resource": "wiki"}, b"Select a valid choice"),  # needs no approval
    ({"resource": "secret"}, b"Select a valid choice"),  # not shared with erin
])
def test_a_bad_request_is_explained_and_nothing_is_stored(vault, erin, data, message):
    ResourceFactory(slug="wiki", tier=TierFactory(name="low"))
    ResourceFactory(slug="secret", tier=vault.tier, groups=["finance"])
    response = _ask(client_for(erin), **data)
    assert response.status_code == 400
    assert message in response.content
    assert not AccessRequest.objects.exists()


def test_a_second_pending_request_for_the_same_resource_is_refused(vault, erin):
    client = client_for(erin)
    _ask(client)
    response = _ask(client)
    assert response.status_code == 400
    assert b"already have a request" in response.content
    assert AccessRequest.objects.count() == 1


def test_request_rules_hold_without_the_form(vault, erin):
    wiki = ResourceFactory(slug="wiki", tier=TierFactory(name="low"))
    with pytest.raises(jit.NotRequestable):
        jit.request_access(erin, wiki, "why", 900)
    with pytest.raises(jit.InvalidRequest):
        jit.request_access(erin, vault, "", 900)
    with pytest.raises(jit.InvalidRequest):
        jit.request_access(erin, vault, "why", 60)
    assert AuditEvent.objects.filter(action="access.request", outcome="refused").count() == 3


def test_the_requester_can_withdraw_a_pending_request(vault, erin):
    client = client_for(erin)
    _ask(client)
    access_request = AccessRequest.objects.get()
    assert client.post(f"/requests/{access_request.pk}/cancel/").status_code == 302
    access_request.refresh_from_db()
    assert access_request.state == "cancelled"
    assert client_for(person("frank")).post(f"/requests/{access_request.pk}/cancel/").status_code == 404


def test_request_form_is_prefilled_from_my_apps(vault, erin):
    html = client_for(erin).get("/requests/?resource=vault").content.decode()
    assert '<option value="vault" selected>' in html
