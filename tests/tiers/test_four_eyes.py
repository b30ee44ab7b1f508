"""Four eyes for lowering protection: an admin cannot weaken a control alone (issue 12, item 2)."""

from __future__ import annotations

import pytest

from portal.audit.models import AuditEvent
from tests.tiers.factories import NetworkZoneFactory, ResourceFactory, TierFactory, client_for, person
from tiers import policy_changes
from tiers.models import PolicyChangeRequest, Resource, Tier, TierChange
from tiers.policy_changes import SelfApproval, Stale, Weakening, move_weakens, tier_state, weakens

# --- the rule: what weakens ---------------------------------------------------------------------

STRICT = {
    "rank": 30, "access_mode": "stream", "mfa_read": 300, "mfa_write": 60, "mfa_sensitive": 0,
    "device_trust_required": True, "allowed_zones": ["office", "vpn"], "approval_required": True,
    "session_max_seconds": 3600, "idle_seconds": 600, "reauth_interval_seconds": 30,
    "clipboard_in": "step_up", "clipboard_out": "deny", "file_transfer": "step_up", "read_only": True,
    "recording": True, "watermark": True, "rate_limit_per_minute": 60, "retention_days": 365,
    "accepted_factors": {"sensitive": ["passkey"]}, "description": "Critical systems",
}

WEAKER = [
    ("rank", 10),
    ("access_mode", "proxy"),
    ("mfa_read", 900),
    ("mfa_read", None),
    ("mfa_sensitive", 60),
    ("mfa_sensitive", None),
    ("device_trust_required", False),
    ("allowed_zones", []),
    ("allowed_zones", ["office", "vpn", "internet-cafe"]),
    ("allowed_zones", ["office", "guest"]),
    ("approval_required", False),
    ("session_max_seconds", 7200),
    ("idle_seconds", 3600),
    ("reauth_interval_seconds", 300),
    ("clipboard_in", "allow"),
    ("clipboard_out", "step_up"),
    ("clipboard_out", "allow"),
    ("file_transfer", "allow"),
    ("read_only", False),
    ("recording", False),
    ("watermark", False),
    ("rate_limit_per_minute", 600),
    ("rate_limit_per_minute", None),
    ("retention_days", 30),
    ("accepted_factors", {}),
    ("accepted_factors", {"sensitive": ["passkey", "totp"]}),
    ("accepted_factors", {"sensitive": ["totp"]}),
    ("accepted_factors", {"sensitive": ["passkey", "idp"]}),
]

STRONGER_OR_SAME = [
    ("rank", 40),
    ("access_mode", "deny"),
    ("mfa_read", 0),
    ("mfa_write", 0),
    ("allowed_zones", ["office"]),
    ("allowed_zones", ["vpn", "office"]),
    ("session_max_seconds", 1800),
    ("idle_seconds", 60),
    ("reauth_interval_seconds", 5),
    ("clipboard_in", "deny"),
    ("file_transfer", "deny"),
    ("rate_limit_per_minute", 10),
    ("retention_days", 3650),
    ("accepted_factors", {"sensitive": ["passkey"], "write": ["passkey"]}),
    ("description", "Anything at all"),
]


@pytest.mark.parametrize(("key", "value"), WEAKER)
def test_a_change_that_loosens_a_rule_is_named_as_weakening(key, value):
    found = weakens(STRICT, STRICT | {key: value})

    assert [w.field for w in found] == [key]


@pytest.mark.parametrize(("key", "value"), STRONGER_OR_SAME)
def test_a_change_that_keeps_or_raises_a_rule_weakens_nothing(key, value):
    assert weakens(STRICT, STRICT | {key: value}) == []


def test_any_network_widened_to_a_list_is_a_narrowing_not_a_weakening():
    assert weakens(STRICT | {"allowed_zones": []}, STRICT | {"allowed_zones": ["office"]}) == []


PROXIED = STRICT | {"access_mode": "proxy", "recording": False, "watermark": False, "read_only": False}


@pytest.mark.parametrize("key", ["clipboard_in", "clipboard_out", "file_transfer"])
def test_stream_controls_of_a_proxied_tier_protect_nothing_so_loosening_them_weakens_nothing(key):
    assert weakens(PROXIED, PROXIED | {key: "allow"}) == []


@pytest.mark.parametrize(("key", "value", "held"), [
    ("rank", 10, True),
    ("approval_required", False, True),
    ("mfa_write", None, True),
    ("recording", False, True),
    ("allowed_zones", [], True),
    ("rate_limit_per_minute", None, False),
    ("session_max_seconds", 86400, False),
    ("retention_days", 30, False),
])
def test_a_move_is_judged_on_rank_and_gates_not_on_operational_limits(key, value, held):
    assert bool(move_weakens(STRICT, STRICT | {key: value})) is held


def test_each_weakening_says_what_and_from_what_to_what():
    found = weakens(STRICT, STRICT | {"mfa_sensitive": None, "approval_required": False})

    assert [str(w) for w in found] == ["Fresh code for sensitive actions: every action -> not needed",
                                       "Approval before access: on -> off"]
    assert found[0] == Weakening("mfa_sensitive", 0, None)
    widened = weakens(STRICT, STRICT | {"accepted_factors": {}})
    assert [str(w) for w in widened] == [
        "Second factors that count: sensitive: a passkey -> any (passkey, authenticator app code or "
        "company sign-in's MFA)"]


def test_a_move_to_a_tier_that_counts_more_factors_weakens():
    assert [w.field for w in move_weakens(STRICT, STRICT | {"accepted_factors": {}})] == ["accepted_factors"]


def test_a_move_to_a_tier_with_a_higher_rank_but_weaker_rules_still_weakens():
    """Rank alone is a label an admin could raise first: the rules are compared too."""
    looser = STRICT | {"rank": 99, "approval_required": False}

    assert [w.field for w in weakens(STRICT, looser)] == ["approval_required"]


# --- the steps, against the database --------------------------------------------------------------


@pytest.fixture
def tiers(db):
    high = TierFactory(name="high", rank=20, access_mode="stream", mfa_read=900, recording=True)
    critical = TierFactory(name="critical", rank=30, access_mode="stream", mfa_read=0, mfa_write=0,
                           approval_required=True, recording=True, watermark=True)
    shell = ResourceFactory(slug="db-shell", name="DB shell", kind="ssh", upstream="10.0.0.5:22",
                            tier=critical)
    return {"high": high, "critical": critical, "shell": shell}


@pytest.fixture
def ada(db):
    return person("ada", "admin")


@pytest.fixture
def bob(db):
    return person("bob", "admin")


@pytest.mark.django_db
def test_an_admin_who_moves_a_critical_resource_down_leaves_it_critical_and_files_a_request(tiers, ada):
    outcome = policy_changes.retag([tiers["shell"]], tiers["high"], ada, reason="debugging")

    assert Resource.objects.get(slug="db-shell").tier.name == "critical"
    assert not TierChange.objects.exists()
    [change] = outcome.held
    assert (change.kind, change.state, change.requested_by, change.changes) == (
        "retag", "pending", ada, {"tier": ["critical", "high"]})
    assert "Approval before access: on -> off" in change.weakens
    event = AuditEvent.objects.get(action="policy.change_requested")
    assert (event.actor, event.resource, event.outcome) == ("ada", "db-shell", "pending")
    assert event.detail["changes"] == {"tier": ["critical", "high"]}


@pytest.mark.django_db
def test_moving_a_resource_up_applies_at_once(tiers, ada):
    wiki = ResourceFactory(slug="wiki", tier=tiers["high"])

    outcome = policy_changes.retag([wiki], tiers["critical"], ada)

    assert Resource.objects.get(slug="wiki").tier.name == "critical"
    assert [c.to_tier for c in outcome.moved] == ["critical"] and outcome.held == []
    assert not PolicyChangeRequest.objects.exists()


@pytest.mark.django_db
def test_the_requester_can_never_approve_their_own_change(tiers, ada):
    [change] = policy_changes.retag([tiers["shell"]], tiers["high"], ada).held

    with pytest.raises(SelfApproval):
        policy_changes.approve(change, ada)

    change.refresh_from_db()
    assert change.state == "pending"
    assert Resource.objects.get(slug="db-shell").tier.name == "critical"
    refused = AuditEvent.objects.get(action="policy.change_approved")
    assert (refused.outcome, refused.actor, refused.reasons[0]["rule"]) == ("refused", "ada", "self_approval")


@pytest.mark.django_db
def test_a_second_admin_approves_and_the_move_is_made_kept_in_history_and_audited(tiers, ada, bob):
    [change] = policy_changes.retag([tiers["shell"]], tiers["high"], ada).held

    policy_changes.approve(change, bob, "ok for the migration")

    change.refresh_from_db()
    assert (change.state, change.decided_by, change.decision_note) == ("applied", bob, "ok for the migration")
    assert change.applied_at is not None
    assert Resource.objects.get(slug="db-shell").tier.name == "high"
    history = TierChange.objects.get()
    assert (history.from_tier, history.to_tier, history.changed_by) == (
        "critical", "high", "ada, approved by bob")
    approved = AuditEvent.objects.get(action="policy.change_approved")
    assert (approved.actor, approved.outcome, approved.detail["requested_by"]) == ("bob", "success", "ada")


@pytest.mark.django_db
def test_a_rejected_change_is_never_applied_and_is_audited(tiers, ada, bob):
    [change] = policy_changes.retag([tiers["shell"]], tiers["high"], ada).held

    policy_changes.reject(change, bob, "no")

    assert PolicyChangeRequest.objects.get().state == "rejected"
    assert Resource.objects.get(slug="db-shell").tier.name == "critical"
    with pytest.raises(policy_changes.NotPending):
        policy_changes.approve(change, bob)
    assert AuditEvent.objects.get(action="policy.change_rejected", outcome="success").actor == "bob"


@pytest.mark.django_db
def test_the_requester_may_withdraw_their_own_change(tiers, ada):
    [change] = policy_changes.retag([tiers["shell"]], tiers["high"], ada).held

    policy_changes.reject(change, ada)

    assert PolicyChangeRequest.objects.get().state == "withdrawn"


@pytest.mark.django_db
def test_an_approval_after_the_resource_moved_elsewhere_is_refused_as_stale(tiers, ada, bob):
    [change] = policy_changes.retag([tiers["shell"]], tiers["high"], ada).held
    top = TierFactory(name="top", rank=90, access_mode="deny", mfa_read=0, mfa_write=0,
                      approval_required=True, recording=True, watermark=True)
    policy_changes.retag([tiers["shell"]], top, bob)

    with pytest.raises(Stale):
        policy_changes.approve(change, bob)

    assert Resource.objects.get(slug="db-shell").tier.name == "top"


@pytest.mark.django_db
def test_asking_twice_for_the_same_change_files_one_request(tiers, ada):
    policy_changes.retag([tiers["shell"]], tiers["high"], ada)
    policy_changes.retag([tiers["shell"]], tiers["high"], ada)

    assert PolicyChangeRequest.objects.count() == 1


@pytest.mark.django_db
def test_a_tier_edit_applies_what_tightens_and_holds_what_loosens(tiers, ada, bob):
    critical = tiers["critical"]
    vpn = NetworkZoneFactory(name="vpn")
    wanted = tier_state(critical) | {"approval_required": False, "mfa_write": None,
                                     "allowed_zones": ["vpn"], "idle_seconds": 60}

    outcome = policy_changes.edit_tier(critical, wanted, ada, reason="on-call")

    critical.refresh_from_db()
    assert critical.approval_required and critical.mfa_write == 0  # still in force
    assert critical.idle_seconds == 60 and list(critical.allowed_zones.all()) == [vpn]
    assert set(outcome.applied) == {"idle_seconds", "allowed_zones"}
    assert outcome.held.changes == {"approval_required": [True, False], "mfa_write": [0, None]}
    update = AuditEvent.objects.get(action="tier.update")
    assert set(update.detail["changes"]) == {"idle_seconds", "allowed_zones"}

    policy_changes.approve(outcome.held, bob)

    critical.refresh_from_db()
    assert not critical.approval_required and critical.mfa_write is None


@pytest.mark.django_db
def test_a_tier_edit_approved_after_someone_else_changed_the_same_rule_is_stale(tiers, ada, bob):
    critical = tiers["critical"]
    held = policy_changes.edit_tier(critical, tier_state(critical) | {"idle_seconds": 7200}, ada).held
    policy_changes.edit_tier(critical, tier_state(critical) | {"idle_seconds": 60}, bob)

    with pytest.raises(Stale):
        policy_changes.approve(held, bob)
    assert Tier.objects.get(name="critical").idle_seconds == 60


# --- the probe, through the Manage pages -------------------------------------------------------------


@pytest.mark.django_db
def test_the_probe_an_admin_retags_db_shell_to_high_and_it_stays_critical(tiers, ada):
    client = client_for(ada)

    response = client.post("/manage/resources/", {"resources": ["db-shell"], "tier": "high",
                                                  "reason": "quick look"}, follow=True)

    assert Resource.objects.get(slug="db-shell").tier.name == "critical"
    page = response.content.decode()
    assert "This lowers protection: it needs a second admin&#x27;s approval" in page
    assert "Approval before access: on -&gt; off" in page
    assert PolicyChangeRequest.objects.get().reason == "quick look"


@pytest.mark.django_db
def test_the_resource_page_says_which_moves_need_a_second_admin(tiers, ada):
    html = client_for(ada).get("/manage/resources/db-shell/").content.decode()

    assert "high (lowers protection: needs a second admin&#x27;s approval)</option>" in html
    assert "Moving to <strong>high</strong> lowers protection: it needs a second admin's approval." in html


@pytest.mark.django_db
def test_the_requester_sees_no_approve_button_and_a_forged_approval_answers_403(tiers, ada):
    [change] = policy_changes.retag([tiers["shell"]], tiers["high"], ada).held
    client = client_for(ada)

    page = client.get("/manage/changes/").content.decode()
    response = client.post(f"/manage/changes/{change.pk}/approve/")

    assert f'data-change="{change.pk}"' in page and "another admin must approve it" in page
    assert f"/manage/changes/{change.pk}/approve/" not in page
    assert response.status_code == 403
    assert Resource.objects.get(slug="db-shell").tier.name == "critical"


@pytest.mark.django_db
def test_another_admin_sees_what_would_change_and_approving_applies_it(tiers, ada, bob):
    [change] = policy_changes.retag([tiers["shell"]], tiers["high"], ada, reason="migration").held
    client = client_for(bob)

    page = client.get("/manage/changes/").content.decode()
    response = client.post(f"/manage/changes/{change.pk}/approve/", {"note": "ok"})

    assert "from <strong>critical</strong> to <strong>high</strong>" in page
    assert "Approval before access: on -&gt; off" in page and "migration" in page
    assert f"/manage/changes/{change.pk}/approve/" in page
    assert response.status_code == 302
    assert Resource.objects.get(slug="db-shell").tier.name == "high"
    assert client.get("/manage/").content.decode().count("0 waiting for a second admin") == 1


@pytest.mark.django_db
def test_rejecting_from_the_page_keeps_the_stronger_tier(tiers, ada, bob):
    [change] = policy_changes.retag([tiers["shell"]], tiers["high"], ada).held

    client_for(bob).post(f"/manage/changes/{change.pk}/reject/", {"note": "no"})

    assert PolicyChangeRequest.objects.get().state == "rejected"
    assert Resource.objects.get(slug="db-shell").tier.name == "critical"


@pytest.mark.django_db
def test_turning_approval_off_on_the_tier_page_is_held_and_said_so(tiers, ada):
    critical = tiers["critical"]
    data = {k: ("" if v is None else v) for k, v in tier_state(critical).items()
            if k not in {"allowed_zones", "approval_required", "device_trust_required", "read_only",
                         "recording", "watermark"}}
    data |= {"recording": "on", "watermark": "on", "idle_seconds": 600}  # approval_required unticked

    client = client_for(ada)
    response = client.post("/manage/tiers/critical/", data, follow=True)

    critical.refresh_from_db()
    assert critical.approval_required and critical.idle_seconds == 600
    page = response.content.decode()
    assert "Tier critical saved (1 change(s))." in page
    assert "This lowers protection: it needs a second admin&#x27;s approval" in page
    form_page = client.get("/manage/tiers/critical/").content.decode()
    assert "data-pending-changes" in form_page and "Approval before access: on -&gt; off" in form_page


@pytest.mark.django_db
def test_on_the_tier_page_counting_fewer_factors_applies_and_counting_more_is_held(tiers, ada):
    critical = tiers["critical"]
    base = {k: ("" if v is None else v) for k, v in tier_state(critical).items()
            if k not in {"allowed_zones", "accepted_factors", "device_trust_required", "read_only"}}
    base |= {"approval_required": "on", "recording": "on", "watermark": "on"}
    client = client_for(ada)

    client.post("/manage/tiers/critical/", base | {"accepted_factors": ["sensitive:passkey"]})
    critical.refresh_from_db()
    assert critical.accepted_factors == {"sensitive": ["passkey"]}
    assert not PolicyChangeRequest.objects.exists()

    client.post("/manage/tiers/critical/", base | {"accepted_factors": ["sensitive:passkey", "sensitive:totp",
                                                                "sensitive:idp"]})
    critical.refresh_from_db()
    assert critical.accepted_factors == {"sensitive": ["passkey"]}
    change = PolicyChangeRequest.objects.get()
    assert change.changes == {"accepted_factors": [{"sensitive": ["passkey"]}, {}]}
    form_page = client.get("/manage/tiers/critical/").content.decode()
    assert 'value="sensitive:passkey"' in form_page and "Second factors that count" in form_page


# --- the Django admin is no way around it ---------------------------------------------------------------


@pytest.fixture
def root(db):
    user = person("root", "admin")
    user.is_superuser = True
    user.save()
    return user


@pytest.mark.django_db
def test_a_tier_saved_in_the_django_admin_keeps_its_protective_rules(tiers, root):
    client = client_for(root)
    url = f"/admin/tiers/tier/{tiers['critical'].pk}/change/"

    page = client.get(url).content.decode()
    response = client.post(url, {"name": "critical", "description": "renamed in admin"})

    assert 'name="approval_required"' not in page and 'name="mfa_read"' not in page
    assert 'name="accepted_factors"' not in page
    assert response.status_code == 302
    critical = Tier.objects.get(name="critical")
    assert critical.description == "renamed in admin"
    assert critical.approval_required and critical.recording and critical.mfa_read == 0


@pytest.mark.django_db
def test_a_resource_saved_in_the_django_admin_keeps_its_tier(tiers, root):
    client = client_for(root)
    shell = tiers["shell"]
    url = f"/admin/tiers/resource/{shell.pk}/change/"

    page = client.get(url).content.decode()
    response = client.post(url, {
        "slug": "db-shell", "name": "DB shell", "kind": "ssh", "upstream": "10.0.0.5:22",
        "tier": str(tiers["high"].pk), "enabled": "on",
        "action_rules-TOTAL_FORMS": "0", "action_rules-INITIAL_FORMS": "0"})

    assert 'name="tier"' not in page
    assert response.status_code == 302
    assert Resource.objects.get(slug="db-shell").tier.name == "critical"
    assert not TierChange.objects.exists()


@pytest.mark.django_db
def test_change_requests_cannot_be_edited_or_approved_in_the_django_admin(tiers, ada, root):
    [change] = policy_changes.retag([tiers["shell"]], tiers["high"], ada).held
    client = client_for(root)

    assert client.get("/admin/tiers/policychangerequest/").status_code == 200
    client.post(f"/admin/tiers/policychangerequest/{change.pk}/change/", {"state": "applied"})

    assert PolicyChangeRequest.objects.get().state == "pending"


# --- catalog apply ------------------------------------------------------------------------------------

CATALOG = """\
tiers:
  - name: high
    rank: 20
    access_mode: stream
    mfa: {read: 900, write: 900}
    recording: true
  - name: critical
    rank: 30
    access_mode: stream
    mfa: {read: 0, write: 0}
    approval_required: true
    recording: true
    watermark: true
resources:
  - slug: db-shell
    name: DB shell
    kind: ssh
    upstream: 10.0.0.5:22
    tier: critical
"""


def _apply(text: str, *args: str) -> str:
    import tempfile
    from io import StringIO

    from django.core.management import call_command

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(text)
    out = StringIO()
    call_command("catalog", "apply", handle.name, *args, stdout=out)
    return out.getvalue().replace(handle.name, "catalog.yaml")


@pytest.mark.django_db
def test_a_catalog_that_moves_db_shell_down_files_a_request_names_the_line_and_applies_the_rest(ada):
    _apply(CATALOG)
    lowered = CATALOG.replace("    tier: critical\n", "    tier: high\n").replace(
        "name: DB shell", "name: Database shell")

    out = _apply(lowered, "--requested-by", "ada")

    shell = Resource.objects.get(slug="db-shell")
    assert (shell.tier.name, shell.name) == ("critical", "Database shell")
    change = PolicyChangeRequest.objects.get()
    assert (change.kind, change.changes, change.requested_by) == ("retag", {"tier": ["critical", "high"]}, ada)
    assert change.source.endswith(".yaml:15")
    assert "held: catalog.yaml:15: resource db-shell: lowers protection (" in out
    assert f"change request #{change.pk} filed: it needs a second admin's approval" in out
    assert "1 change(s) lower protection: not applied, waiting for a second admin's approval" in out
    assert "update resource db-shell: name: 'DB shell' -> 'Database shell'" in out
    with pytest.raises(SelfApproval):
        policy_changes.approve(change, ada)


@pytest.mark.django_db
def test_a_catalog_that_loosens_a_tier_keeps_the_strict_rule_and_applies_the_tightening(bob):
    _apply(CATALOG)
    loosened = CATALOG.replace("    approval_required: true\n", "").replace(
        "    mfa: {read: 900, write: 900}\n", "    mfa: {read: 300, write: 900}\n")

    out = _apply(loosened)
    again = _apply(loosened)

    critical, high = Tier.objects.get(name="critical"), Tier.objects.get(name="high")
    assert critical.approval_required and high.mfa_read == 300
    change = PolicyChangeRequest.objects.get()  # applying again files no second request
    assert change.changes == {"approval_required": [True, False]} and change.requested_by is None
    assert "held: catalog.yaml:7: tier critical: lowers protection (Approval before access: on -> off)" in out
    assert "held: catalog.yaml:7: tier critical" in again and "no other changes" in again
    assert AuditEvent.objects.filter(action="policy.change_requested").count() == 1

    policy_changes.approve(change, bob)

    assert not Tier.objects.get(name="critical").approval_required
    assert _apply(loosened).strip() == "catalog.yaml: no changes"


@pytest.mark.django_db
def test_a_dry_run_says_what_would_be_held_and_files_nothing():
    _apply(CATALOG)

    out = _apply(CATALOG.replace("    tier: critical\n", "    tier: high\n"), "--dry-run")

    assert "held: catalog.yaml:15: resource db-shell" in out and "a change request would be filed" in out
    assert not PolicyChangeRequest.objects.exists()
    assert Resource.objects.get(slug="db-shell").tier.name == "critical"


@pytest.mark.django_db
def test_a_catalog_that_counts_more_factors_for_a_tier_is_held_with_its_line(bob):
    strict = CATALOG.replace("    watermark: true\n", "    watermark: true\n    accepted_factors: {sensitive: [passkey]}\n")
    _apply(strict)
    assert Tier.objects.get(name="critical").accepted_factors == {"sensitive": ["passkey"]}

    out = _apply(CATALOG)

    assert Tier.objects.get(name="critical").accepted_factors == {"sensitive": ["passkey"]}
    change = PolicyChangeRequest.objects.get()
    assert change.changes == {"accepted_factors": [{"sensitive": ["passkey"]}, {}]}
    assert ("held: catalog.yaml:7: tier critical: lowers protection (Second factors that count: "
            "sensitive: a passkey -> any") in out
    policy_changes.approve(change, bob)
    assert Tier.objects.get(name="critical").accepted_factors == {}


@pytest.mark.django_db
def test_a_catalog_that_raises_a_resource_applies_at_once():
    _apply(CATALOG.replace("    tier: critical\n", "    tier: high\n"))

    _apply(CATALOG)

    assert Resource.objects.get(slug="db-shell").tier.name == "critical"
    assert not PolicyChangeRequest.objects.exists()
