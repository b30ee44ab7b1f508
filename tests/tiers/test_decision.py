"""The decision, as a table: every rule, and how the rules interact. No database needed."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tiers.decision import RISK_DENY, RISK_STEP_UP, decide
from tiers.types import (
    Action,
    ActionClass,
    DecisionInput,
    DeviceInfo,
    Outcome,
    ResourceInfo,
    StreamControl,
    Subject,
    TierPolicy,
    ZoneInfo,
)

LOW = TierPolicy(name="low", rank=10, access_mode="proxy", mfa_read=None, mfa_write=3600, mfa_sensitive=0,
                 rate_limit_per_minute=600)
HIGH = TierPolicy(name="high", rank=20, access_mode="stream", mfa_read=900, mfa_write=900, mfa_sensitive=0,
                  recording=True, allowed_zones=frozenset({"office", "vpn"}))
CRITICAL = TierPolicy(name="critical", rank=30, access_mode="stream", mfa_read=0, mfa_write=0, mfa_sensitive=0,
                      approval_required=True, recording=True, watermark=True, read_only=True,
                      device_trust_required=True, clipboard_out=StreamControl.STEP_UP)

WIKI = ResourceInfo(slug="wiki", name="Wiki", kind="web", tier=LOW, allowed_groups=frozenset({"employee"}))
DESKTOP = ResourceInfo(slug="ops", name="Ops desktop", kind="vnc", tier=HIGH,
                       allowed_groups=frozenset({"employee"}))
VAULT = ResourceInfo(slug="vault", name="Vault host", kind="ssh", tier=CRITICAL,
                     allowed_users=frozenset({"erin"}))

ERIN = Subject(username="erin", groups=frozenset({"employee"}), mfa_age=60)
NOW = 1_000_000.0
READ = Action("http", ActionClass.READ, "GET", "/")
WRITE = Action("http", ActionClass.WRITE, "POST", "/edit")
OPEN = Action("desktop.open", ActionClass.READ)


def make(resource=WIKI, action=READ, subject=ERIN, zone="office", **kw) -> DecisionInput:
    return DecisionInput(subject=subject, device=kw.pop("device", DeviceInfo()),
                         zone=ZoneInfo(name=zone, address="10.0.0.5"), resource=resource, action=action,
                         now=NOW, **kw)


CASES = [
    # (id, input, outcome, deciding rule)
    ("low read needs no code", make(), Outcome.ALLOW, None),
    ("low read with no MFA at all in session", make(subject=replace(ERIN, mfa_age=None)), Outcome.ALLOW, None),
    ("low write within the hour", make(action=WRITE, subject=replace(ERIN, mfa_age=3599)), Outcome.ALLOW, None),
    ("low write after the hour", make(action=WRITE, subject=replace(ERIN, mfa_age=3601)),
     Outcome.STEP_UP, "mfa_stale"),
    ("low sensitive needs a code for this action",
     make(action=Action("http", ActionClass.SENSITIVE, "POST", "/admin")), Outcome.STEP_UP, "mfa_per_action"),
    ("low sensitive with a one-time grant", make(action=Action("http", ActionClass.SENSITIVE, "POST", "/x"),
                                                 one_time_mfa=True), Outcome.ALLOW, None),
    ("not shared with the user's groups", make(subject=replace(ERIN, groups=frozenset({"sales"}))),
     Outcome.DENY, "not_entitled"),
    ("shared directly with the user", make(resource=VAULT, action=Action("desktop.open", ActionClass.READ),
                                           subject=replace(ERIN, groups=frozenset())),
     Outcome.DENY, "device_not_trusted"),
    ("locked account", make(subject=replace(ERIN, is_active=False)), Outcome.DENY, "account_locked"),
    ("disabled resource", make(resource=replace(WIKI, enabled=False)), Outcome.DENY, "resource_disabled"),
    ("closed tier", make(resource=replace(WIKI, tier=replace(LOW, access_mode="deny"))), Outcome.DENY, "tier_closed"),
    ("proxy request to a desktop resource", make(resource=DESKTOP, action=READ), Outcome.DENY,
     "pathway_not_allowed"),
    ("desktop open on a web app", make(resource=WIKI, action=OPEN), Outcome.DENY, "pathway_not_allowed"),
    ("high from the office with fresh MFA", make(resource=DESKTOP, action=OPEN), Outcome.ALLOW, None),
    ("high from the internet", make(resource=DESKTOP, action=OPEN, zone="internet"), Outcome.DENY,
     "network_zone_not_allowed"),
    ("high with MFA 16 minutes old", make(resource=DESKTOP, action=OPEN, subject=replace(ERIN, mfa_age=960)),
     Outcome.STEP_UP, "mfa_stale"),
    ("critical without approval", make(resource=VAULT, action=OPEN, device=DeviceInfo("d1", True, True)),
     Outcome.DENY, "approval_required"),
    ("critical with an expired grant", make(resource=VAULT, action=OPEN, device=DeviceInfo("d1", True, True),
                                            grant_expires_at=NOW - 1), Outcome.DENY, "approval_required"),
    ("critical with a grant but no one-time code", make(
        resource=VAULT, action=OPEN, device=DeviceInfo("d1", True, True), grant_expires_at=NOW + 600),
     Outcome.STEP_UP, "mfa_per_action"),
    ("critical with grant and one-time code", make(
        resource=VAULT, action=OPEN, device=DeviceInfo("d1", True, True), grant_expires_at=NOW + 600,
        one_time_mfa=True), Outcome.ALLOW, None),
    ("web app on a stream tier is isolated", make(resource=replace(WIKI, tier=replace(HIGH, allowed_zones=frozenset()))),
     Outcome.ISOLATE, "isolation_required"),
    ("risky session steps up even on a read", make(risk_score=RISK_STEP_UP), Outcome.STEP_UP, "mfa_per_action"),
    ("very risky session is denied", make(risk_score=RISK_DENY, risk_signals=("impossible_travel",)),
     Outcome.DENY, "risk_too_high"),
    ("entitlement is checked before zone", make(resource=DESKTOP, action=OPEN, zone="internet",
                                                subject=replace(ERIN, groups=frozenset())),
     Outcome.DENY, "not_entitled"),
    ("lock beats everything", make(resource=VAULT, action=OPEN, subject=replace(ERIN, is_active=False),
                                   grant_expires_at=NOW + 600, one_time_mfa=True), Outcome.DENY, "account_locked"),
]


@pytest.mark.parametrize(("inp", "outcome", "rule"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decision_table(inp, outcome, rule):
    decision = decide(inp)
    assert decision.outcome is outcome, decision.reasons
    if rule is not None:
        assert decision.reasons[0].rule == rule
        assert decision.reasons[0].message
        assert decision.reasons[0].remedy, "a refusal must say what to do"
    else:
        assert decision.allowed


def test_the_decision_is_pure_same_input_same_output():
    inp = make(resource=DESKTOP, action=OPEN)
    assert decide(inp) == decide(inp)


def test_allow_lists_why_access_was_given():
    rules = [r.rule for r in decide(make(resource=DESKTOP, action=OPEN)).reasons]
    assert rules == ["entitled", "network_zone", "mfa_fresh"]


def test_allow_on_a_recording_tier_carries_the_obligations():
    decision = decide(make(resource=VAULT, action=OPEN, device=DeviceInfo("d1", True, True),
                           grant_expires_at=NOW + 600, one_time_mfa=True))
    assert decision.obligations["record"] is True
    assert decision.obligations["watermark"] is True
    assert decision.obligations["read_only"] is True
    assert decision.obligations["clipboard_out"] == "step_up"
    assert decision.obligations["mfa_max_age"] == 0
    assert decision.consumed_one_time_mfa is True


def test_zone_denial_says_which_networks_are_allowed():
    reason = decide(make(resource=DESKTOP, action=OPEN, zone="internet")).denial
    assert reason.values["allowed_zones"] == ["office", "vpn"]
    assert "office" in reason.remedy


def test_stale_mfa_reports_its_age_and_the_limit():
    reason = decide(make(action=WRITE, subject=replace(ERIN, mfa_age=7200))).denial
    assert reason.values == {"action_class": "write", "freshness": 3600, "mfa_age": 7200}
    assert "1 h" in reason.message


def test_reasons_serialise_for_the_audit_trail():
    data = decide(make(subject=replace(ERIN, groups=frozenset()))).reasons_as_data()
    assert data[0]["rule"] == "not_entitled"
    assert set(data[0]) == {"rule", "message", "values", "remedy"}
