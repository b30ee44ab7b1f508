"""The policy simulator answers with the real decision, and changes nothing."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from portal.audit.models import AuditEvent
from tests.tiers.factories import NetworkZoneFactory, ResourceFactory, TierFactory, client_for, person
from tiers.context import resource_info
from tiers.decision import decide
from tiers.enforcement import load_resource
from tiers.models import AccessGrant, AccessRequest, TierChange
from tiers.types import Action, ActionClass, DecisionInput, DeviceInfo, Subject, ZoneInfo

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(db):
    office = NetworkZoneFactory(name="office", cidrs="10.1.0.0/16")
    low = TierFactory(name="low", rank=10, mfa_read=None, mfa_write=3600, mfa_sensitive=0)
    high = TierFactory(name="high", rank=20, access_mode="stream", mfa_read=900, mfa_sensitive=900,
                       recording=True, zones=[office])
    critical = TierFactory(name="critical", rank=30, access_mode="stream", mfa_read=0, mfa_sensitive=0,
                           approval_required=True, device_trust_required=True, recording=True,
                           watermark=True, read_only=True, zones=[office])
    ResourceFactory(slug="wiki", name="Wiki", tier=low)
    ResourceFactory(slug="ops", name="Ops desktop", kind="vnc", upstream="127.0.0.1:5900", tier=high)
    ResourceFactory(slug="vault", name="Vault host", kind="ssh", upstream="127.0.0.1:22", tier=critical)
    ResourceFactory(slug="payroll", name="Payroll", tier=low, groups=["finance"])
    person("erin")
    return client_for(person("ada", "admin"))


BASE = {"user": "erin", "action_kind": "http", "action_class": "read", "zone": "", "client_address": "",
        "mfa_age": "never", "risk_score": "0"}

# (form changes, expected outcome, expected first rule)
CASES = [
    ({"resource": "wiki"}, "allow", "entitled"),
    ({"resource": "wiki", "action_class": "write"}, "step_up", "mfa_stale"),
    ({"resource": "wiki", "action_class": "write", "mfa_age": "60"}, "allow", "entitled"),
    ({"resource": "wiki", "action_class": "write", "mfa_age": "7200"}, "step_up", "mfa_stale"),
    ({"resource": "wiki", "action_class": "sensitive", "mfa_age": "5"}, "step_up", "mfa_per_action"),
    ({"resource": "wiki", "action_class": "sensitive", "one_time_mfa": "on"}, "allow", "entitled"),
    ({"resource": "wiki", "risk_score": "0.9"}, "deny", "risk_too_high"),
    ({"resource": "wiki", "risk_score": "0.6", "mfa_age": "1"}, "step_up", "mfa_per_action"),
    ({"resource": "payroll"}, "deny", "not_entitled"),
    ({"resource": "ops", "action_kind": "desktop.open"}, "deny", "network_zone_not_allowed"),
    ({"resource": "ops", "action_kind": "desktop.open", "zone": "office", "mfa_age": "60"}, "allow",
     "entitled"),
    ({"resource": "ops", "action_kind": "desktop.open", "client_address": "10.1.2.3", "mfa_age": "60"},
     "allow", "entitled"),
    ({"resource": "ops", "action_kind": "desktop.open", "zone": "office"}, "step_up", "mfa_stale"),
    ({"resource": "ops", "zone": "office"}, "deny", "pathway_not_allowed"),
    ({"resource": "vault", "action_kind": "desktop.open", "zone": "office"}, "deny", "device_not_trusted"),
    ({"resource": "vault", "action_kind": "desktop.open", "zone": "office", "device_trusted": "on"},
     "deny", "approval_required"),
    ({"resource": "vault", "action_kind": "desktop.open", "zone": "office", "device_trusted": "on",
      "has_grant": "on"}, "step_up", "mfa_per_action"),
    ({"resource": "vault", "action_kind": "desktop.open", "zone": "office", "device_trusted": "on",
      "has_grant": "on", "one_time_mfa": "on"}, "allow", "entitled"),
]


def _expected(form: dict, now: float) -> DecisionInput:
    """The same question, put to decide() directly."""
    age = None if form["mfa_age"] == "never" else float(form["mfa_age"])
    if form["client_address"]:
        zone = ZoneInfo("office", True, form["client_address"])
    elif form["zone"]:
        zone = ZoneInfo(form["zone"], True)
    else:
        zone = ZoneInfo()
    trusted = form.get("device_trusted") == "on"
    return DecisionInput(
        subject=Subject("erin", frozenset({"employee"}), True, age),
        device=DeviceInfo("simulated" if trusted else "", trusted, trusted),
        zone=zone, resource=resource_info(load_resource(form["resource"])),
        action=Action(form["action_kind"], ActionClass(form["action_class"])), now=now,
        grant_expires_at=now + 3600 if form.get("has_grant") else None,
        one_time_mfa=form.get("one_time_mfa") == "on", risk_score=float(form["risk_score"]),
        risk_signals=("simulated",) if float(form["risk_score"]) else (),
    )


@pytest.mark.parametrize(("changes", "outcome", "first_rule"), CASES)
def test_simulator_answers_exactly_what_decide_answers(world, changes, outcome, first_rule):
    form = BASE | changes
    response = world.post("/manage/simulator/", form)
    assert response.status_code == 200, response.content[-2000:]
    simulation = response.context["simulation"]
    expected = decide(_expected(form, simulation.input.now))
    assert simulation.decision == expected
    assert (str(expected.outcome), expected.reasons[0].rule) == (outcome, first_rule)
    html = response.content.decode()
    assert f'data-outcome="{outcome}"' in html
    for reason in expected.reasons:
        assert reason.rule in html
        if reason.remedy:
            assert reason.remedy.replace("'", "&#x27;") in html


def test_allow_shows_the_obligations(world):
    form = BASE | {"resource": "ops", "action_kind": "desktop.open", "zone": "office", "mfa_age": "60"}
    html = world.post("/manage/simulator/", form).content.decode()
    assert "<dt>record</dt><dd><code>True</code></dd>" in html


def test_a_client_address_is_resolved_to_its_zone(world):
    form = BASE | {"resource": "wiki", "client_address": "10.1.200.7", "zone": ""}
    simulation = world.post("/manage/simulator/", form).context["simulation"]
    assert (simulation.input.zone.name, simulation.input.zone.address) == ("office", "10.1.200.7")


def test_simulating_changes_nothing_but_its_own_audit_event(world):
    counts = [m.objects.count() for m in (AccessGrant, AccessRequest, TierChange)]
    form = BASE | {"resource": "vault", "action_kind": "desktop.open", "zone": "office",
                   "device_trusted": "on", "has_grant": "on", "one_time_mfa": "on"}
    with CaptureQueriesContext(connection) as queries:
        response = world.post("/manage/simulator/", form)
    assert response.status_code == 200
    writes = [q["sql"] for q in queries.captured_queries
              if q["sql"].lstrip().split()[0].upper() in {"INSERT", "UPDATE", "DELETE"}]
    assert writes and all("audit" in sql for sql in writes), writes
    assert [m.objects.count() for m in (AccessGrant, AccessRequest, TierChange)] == counts
    event = AuditEvent.objects.filter(action="simulator.run").latest("seq")
    assert (event.actor, event.resource, event.outcome) == ("ada", "vault", "allow")
    assert event.detail["user"] == "erin"


def test_bad_mfa_age_is_explained(world):
    response = world.post("/manage/simulator/", BASE | {"resource": "wiki", "mfa_age": "soon"})
    assert response.status_code == 400
    assert b"Enter a number of seconds" in response.content
    assert not AuditEvent.objects.filter(action="simulator.run").exists()


def test_the_empty_simulator_offers_every_user_and_resource(world):
    html = world.get("/manage/simulator/").content.decode()
    assert 'value="erin"' in html and 'value="payroll"' in html and 'value="office"' in html


def test_each_resource_offers_as_default_action_what_opening_it_from_my_apps_asks(world):
    """The page's defaults (applied when a resource is picked) are tiers.pages.open_action's."""
    import re

    from tiers.models import Resource
    from tiers.pages import open_action

    html = world.get("/manage/simulator/").content.decode()
    offered = {m["slug"]: (m["action"], m["cls"]) for m in re.finditer(
        r'<span data-slug="(?P<slug>[^"]+)" data-action="(?P<action>[^"]+)" data-class="(?P<cls>[^"]+)">', html)}
    expected = {r.slug: (open_action(r).kind, str(open_action(r).action_class)) for r in Resource.objects.all()}
    assert offered == expected
    assert offered["vault"] == ("desktop.open", "sensitive") and offered["wiki"] == ("http", "read")
    assert 'src="/static/portal/simulator.js"' in html


@pytest.mark.parametrize(("mfa_age", "words"), [("1", "1 second ago"), ("60", "60 seconds ago")])
def test_the_assumed_last_code_reads_as_proper_english(world, mfa_age, words):
    html = world.post("/manage/simulator/", BASE | {"resource": "wiki", "mfa_age": mfa_age}).content.decode()
    assert f"<dt>Last MFA</dt><dd>{words}</dd>" in html


@pytest.mark.parametrize("accepted, outcome", [(["passkey"], "step_up"), (["passkey", "idp"], "allow")])
def test_the_simulator_asks_what_the_idps_mfa_would_count_for(world, accepted, outcome):
    from django.contrib.auth import get_user_model

    from tiers.models import Resource
    from tiers.pages import simulate

    wiki = Resource.objects.get(slug="wiki")
    wiki.tier.accepted_factors = {"write": accepted}
    wiki.tier.save()
    erin = get_user_model().objects.get(username="erin")

    result = simulate(erin, wiki, Action("http", ActionClass.WRITE, "POST", "/"), mfa_age=60, mfa_factor="idp")

    assert result.decision.outcome == outcome
