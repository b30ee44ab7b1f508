"""Manage pages: who may see them, bulk re-tag with history and audit, tier edits."""

from __future__ import annotations

import pytest

from portal.audit.models import AuditEvent
from tests.tiers.factories import NetworkZoneFactory, ResourceFactory, TierFactory, client_for, person
from tiers.models import AccessGrant, AccessRequest, PolicyChangeRequest, Resource, Tier, TierChange

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog(db):
    low = TierFactory(name="low", rank=10)
    high = TierFactory(name="high", rank=20, access_mode="stream")
    wiki = ResourceFactory(slug="wiki", name="Wiki", tier=low)
    ResourceFactory(slug="crm", name="CRM", tier=low)
    ResourceFactory(slug="ops", name="Ops desktop", kind="vnc", upstream="127.0.0.1:5900", tier=high)
    erin = person("erin")
    access_request = AccessRequest.objects.create(requester=erin, resource=wiki, justification="x")
    grant = AccessGrant.objects.create(user=erin, resource=wiki, granted_by="ada",
                                       expires_at="2999-01-01T00:00:00Z")
    ops = Resource.objects.get(slug="ops")
    change = PolicyChangeRequest.objects.create(kind="retag", resource=ops, changes={"tier": ["high", "low"]},
                                                weakens=["Rank (sensitivity): 20 -> 10"])
    return {"request": access_request, "grant": grant, "change": change}


PAGES = ["/manage/", "/manage/resources/", "/manage/resources/wiki/", "/manage/tiers/",
         "/manage/tiers/low/", "/manage/simulator/", "/manage/requests/", "/manage/changes/"]


def _posts(catalog) -> list[tuple[str, dict]]:
    return [
        ("/manage/resources/", {"resources": ["wiki"], "tier": "high"}),
        ("/manage/tiers/low/", {"rank": "1", "access_mode": "deny"}),
        ("/manage/simulator/", {"user": "erin", "resource": "wiki"}),
        (f"/manage/requests/{catalog['request'].pk}/approve/", {}),
        (f"/manage/requests/{catalog['request'].pk}/deny/", {}),
        (f"/manage/grants/{catalog['grant'].pk}/revoke/", {}),
        (f"/manage/changes/{catalog['change'].pk}/approve/", {}),
        (f"/manage/changes/{catalog['change'].pk}/reject/", {}),
    ]


@pytest.mark.parametrize("path", PAGES)
def test_anonymous_is_sent_to_sign_in(client, catalog, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.parametrize("role", ["employee", "auditor"])
@pytest.mark.parametrize("path", PAGES)
def test_manage_pages_tell_employees_and_auditors_the_area_is_for_admins(catalog, role, path):
    client = client_for(person(f"someone-{role}", role))
    response = client.get(path)
    assert response.status_code == 403
    assert b"This area is for admins" in response.content


@pytest.mark.parametrize("role", ["employee", "auditor"])
def test_manage_changes_are_refused_to_employees_and_auditors(catalog, role):
    client = client_for(person(f"someone-{role}", role))
    for path, data in _posts(catalog):
        assert client.post(path, data).status_code == 403, path
    assert Tier.objects.get(name="low").access_mode == "proxy"
    assert not TierChange.objects.exists()
    assert AccessRequest.objects.get().state == "pending"
    assert AccessGrant.objects.get().revoked_at is None
    assert PolicyChangeRequest.objects.get().state == "pending"
    assert Resource.objects.get(slug="ops").tier.name == "high"


@pytest.mark.parametrize("path", PAGES)
def test_admins_see_every_manage_page(catalog, path):
    client = client_for(person("ada", "admin"))
    response = client.get(path)
    assert response.status_code == 200
    assert b'href="/manage/"' in response.content  # the nav offers Manage


def test_unknown_resource_or_tier_answers_404_to_admins(catalog):
    client = client_for(person("ada", "admin"))
    assert client.get("/manage/resources/nope/").status_code == 404
    assert client.get("/manage/tiers/nope/").status_code == 404


def test_manage_posts_need_the_csrf_token(catalog):
    client = client_for(person("ada", "admin"))
    client.handler.enforce_csrf_checks = True
    response = client.post("/manage/resources/", {"resources": ["wiki"], "tier": "high"})
    assert response.status_code == 403
    assert not TierChange.objects.exists()


# --- resources -----------------------------------------------------------------------------------

def test_resource_list_filters_by_tier_kind_and_text(catalog):
    client = client_for(person("ada", "admin"))

    def slugs(query: str) -> set[str]:
        return {r.slug for r in client.get(f"/manage/resources/?{query}").context["resources"]}

    assert slugs("") == {"wiki", "crm", "ops"}
    assert slugs("tier=low") == {"wiki", "crm"}
    assert slugs("kind=vnc") == {"ops"}
    assert slugs("q=wik") == {"wiki"}
    assert slugs("tier=low&q=crm") == {"crm"}


def test_a_filter_value_that_names_nothing_filters_nothing_and_says_so(catalog):
    response = client_for(person("ada", "admin")).get("/manage/resources/?tier=nope&kind=telnet")

    assert response.status_code == 200
    assert {r.slug for r in response.context["resources"]} == {"wiki", "crm", "ops"}
    assert "Select a valid choice" in response.content.decode()


def test_bulk_retag_moves_resources_and_writes_history_and_audit(catalog):
    client = client_for(person("ada", "admin"))
    response = client.post("/manage/resources/", {"resources": ["wiki", "crm", "ops"], "tier": "high",
                                                  "query": "tier=low"})
    assert response.status_code == 302
    assert response["Location"] == "/manage/resources/?tier=low"

    changes = {c.resource.slug: c for c in TierChange.objects.all()}
    assert set(changes) == {"wiki", "crm"}  # ops already was high: nothing to record
    assert all((c.from_tier, c.to_tier, c.changed_by) == ("low", "high", "ada") for c in changes.values())
    events = AuditEvent.objects.filter(action="catalog.retag")
    assert {e.resource for e in events} == {"wiki", "crm"}
    assert all(e.actor == "ada" and e.detail["from"] == "low" and e.detail["to"] == "high" for e in events)

    page = client.get("/manage/resources/wiki/").content.decode()
    assert "Tier history" in page and "ada" in page
    assert "<td>low</td><td>high</td>" in page


def test_retag_without_a_selection_explains_and_changes_nothing(catalog):
    client = client_for(person("ada", "admin"))
    response = client.post("/manage/resources/", {"tier": "high"})
    assert response.status_code == 400
    assert b"Select at least one resource" in response.content
    assert not TierChange.objects.exists()


def test_retag_from_the_detail_page_returns_to_it(catalog):
    client = client_for(person("ada", "admin"))
    response = client.post("/manage/resources/", {"resources": "wiki", "tier": "high",
                                                  "return_to": "resource"})
    assert response["Location"] == "/manage/resources/wiki/"
    assert TierChange.objects.get().to_tier == "high"


def test_the_resources_page_labels_its_two_tier_selects_apart(catalog):
    html = client_for(person("ada", "admin")).get("/manage/resources/").content.decode()

    assert '<label for="id_tier">Show tier</label>' in html
    assert "Move selected to</label>" in html
    assert html.count(">Tier</label>") == 0


def test_the_filter_row_has_no_help_line_under_one_field_to_push_it_out_of_line(catalog):
    html = client_for(person("ada", "admin")).get("/manage/resources/").content.decode()
    filters = html.split('role="search"', 1)[1].split("</form>", 1)[0]

    assert 'class="help"' not in filters
    assert 'placeholder="e.g. wiki"' in filters


def test_retag_cannot_redirect_elsewhere(catalog):
    client = client_for(person("ada", "admin"))
    response = client.post("/manage/resources/", {"resources": "wiki", "tier": "high",
                                                  "query": "https://evil.example/"})
    assert response["Location"].startswith("/manage/resources/")


# --- tiers ---------------------------------------------------------------------------------------

def test_tiers_page_lists_rules_in_words(catalog):
    vpn = NetworkZoneFactory(name="vpn")
    TierFactory(name="critical", rank=30, access_mode="stream", approval_required=True, zones=[vpn],
                mfa_read=0, recording=True)
    html = client_for(person("ada", "admin")).get("/manage/tiers/").content.decode()
    assert html.index('id="tier-low"') < html.index('id="tier-critical"')
    assert "Approval before access" in html and "every action" in html and "vpn" in html


def _tier_form(tier: Tier, **changes) -> dict:
    data = {f: getattr(tier, f) for f in (
        "description", "rank", "access_mode", "session_max_seconds", "idle_seconds",
        "reauth_interval_seconds", "clipboard_in", "clipboard_out", "file_transfer", "retention_days")}
    data |= {"mfa_write": tier.mfa_write, "mfa_sensitive": tier.mfa_sensitive}
    data = {k: "" if v is None else v for k, v in data.items()}
    return data | changes


def test_editing_a_tier_saves_and_audits_what_changed(catalog):
    vpn = NetworkZoneFactory(name="vpn")
    client = client_for(person("ada", "admin"))
    low = Tier.objects.get(name="low")
    response = client.post("/manage/tiers/low/", _tier_form(low, mfa_read="300", allowed_zones=[vpn.name],
                                                            approval_required="on"))
    assert response.status_code == 302
    low.refresh_from_db()
    assert (low.mfa_read, low.approval_required) == (300, True)
    assert [z.name for z in low.allowed_zones.all()] == ["vpn"]
    event = AuditEvent.objects.get(action="tier.update")
    assert event.actor == "ada" and event.resource == "low"
    assert event.detail["changes"]["mfa_read"] == [None, 300]
    assert event.detail["changes"]["allowed_zones"] == [[], ["vpn"]]
    assert event.detail["changes"]["approval_required"] == [False, True]
    assert "rank" not in event.detail["changes"]


def test_an_invalid_tier_edit_explains_and_changes_nothing(catalog):
    client = client_for(person("ada", "admin"))
    low = Tier.objects.get(name="low")
    response = client.post("/manage/tiers/low/", _tier_form(low, recording="on"))
    assert response.status_code == 400
    assert b"only applies to pixel-streamed tiers" in response.content
    low.refresh_from_db()
    assert not low.recording
    assert not AuditEvent.objects.filter(action="tier.update").exists()


def test_the_tier_name_cannot_be_changed_from_the_form(catalog):
    client = client_for(person("ada", "admin"))
    low = Tier.objects.get(name="low")
    client.post("/manage/tiers/low/", _tier_form(low, name="renamed"))
    assert Tier.objects.filter(name="low").exists()


# --- Django admin ----------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["tier", "resource", "networkzone", "accessrequest", "accessgrant",
                                   "tierchange"])
def test_the_catalog_is_in_the_django_admin_for_superusers(catalog, model):
    root = person("root", "admin")
    root.is_superuser = True
    root.save()
    client = client_for(root)
    assert client.get(f"/admin/tiers/{model}/").status_code == 200
    assert client.get(f"/admin/tiers/{model}/add/").status_code == (
        403 if model in {"accessrequest", "accessgrant", "tierchange"} else 200)


def test_a_new_tier_in_the_django_admin_names_its_factors_by_ticks(catalog):
    root = person("root", "admin")
    root.is_superuser = True
    root.save()
    client = client_for(root)
    page = client.get("/admin/tiers/tier/add/").content.decode()

    response = client.post("/admin/tiers/tier/add/", {
        "name": "payroll", "rank": 40, "access_mode": "proxy", "mfa_sensitive": 0,
        "accepted_factors": ["sensitive:passkey", "write:passkey"], "session_max_seconds": 3600,
        "idle_seconds": 600, "reauth_interval_seconds": 30, "clipboard_in": "deny", "clipboard_out": "deny",
        "file_transfer": "deny", "retention_days": 365})

    assert 'type="checkbox" name="accepted_factors" value="sensitive:passkey"' in page
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Tier.objects.get(name="payroll").accepted_factors == {"write": ["passkey"], "sensitive": ["passkey"]}


def test_a_tier_move_in_the_django_admin_is_kept_in_history(catalog, rf):
    from django.contrib.admin.sites import site

    from tiers.admin import ResourceAdmin
    from tiers.models import Resource

    ada = person("ada", "admin")
    request = rf.post("/admin/")
    request.user, request.client_address, request.request_id = ada, "10.0.0.1", "r1"
    wiki = Resource.objects.get(slug="wiki")
    form = type("Form", (), {"changed_data": ["tier"]})()
    wiki.tier = Tier.objects.get(name="high")
    ResourceAdmin(Resource, site).save_model(request, wiki, form, change=True)
    change = TierChange.objects.get()
    assert (change.from_tier, change.to_tier, change.changed_by) == ("low", "high", "ada")
    assert AuditEvent.objects.get(action="catalog.retag").client_address == "10.0.0.1"


def test_the_resource_page_says_what_a_move_does_to_live_sessions(catalog):
    from tests.tiers.factories import ResourceFactory
    from tiers.models import Tier
    from tiers.pages import live_effect

    low = Tier.objects.create(name="lowx", rank=1, access_mode="proxy")
    high = Tier.objects.create(name="highx", rank=30, access_mode="stream")
    wiki = ResourceFactory(slug="wikix", name="Wikix", kind="web", upstream="http://127.0.0.1:9/", tier=low)
    assert "sent to an isolated desktop at their next request" in live_effect(wiki, high)
    wiki.tier = high
    assert "Isolated sessions of Wikix end at their next re-check" in live_effect(wiki, low)
    wiki.tier = low
    page = client_for(person("ada", "admin")).get("/manage/resources/wikix/").content.decode()
    assert "What a move does to live sessions" in page and "To highx:" in page
