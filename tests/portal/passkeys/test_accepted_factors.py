"""Tiers name the second factors that count per action class: the decision (pure), the step-up
page's reading of its sentence, the simulator and the tier's rules in words."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from portal.accounts.stepup import step_up_ask
from tests.tiers.factories import ResourceFactory, TierFactory, person
from tiers.decision import decide
from tiers.pages import simulate, simulation_summary, tier_rules
from tiers.types import (
    Action,
    ActionClass,
    DecisionInput,
    DeviceInfo,
    Outcome,
    ResourceInfo,
    Subject,
    TierPolicy,
    ZoneInfo,
)

PASSKEY_ONLY = (("sensitive", frozenset({"passkey"})),)


def decide_with(*, freshness: int, factor: str | None, age: float | None = 10.0,
                one_time: frozenset[str] = frozenset(), accepted=PASSKEY_ONLY):
    tier = TierPolicy("critical", mfa_sensitive=freshness, accepted_factors=accepted)
    resource = ResourceInfo("pay", "Payroll", "web", tier, allowed_groups=frozenset({"staff"}))
    return decide(DecisionInput(
        subject=Subject("erin", frozenset({"staff"}), mfa_age=age, mfa_factor=factor),
        device=DeviceInfo(), zone=ZoneInfo(), resource=resource,
        action=Action("http", ActionClass.SENSITIVE, "POST", "/pay"), now=1000.0,
        one_time_mfa=bool(one_time), one_time_mfa_factors=one_time))


@pytest.mark.parametrize(("freshness", "factor", "one_time", "outcome", "rule"), [
    (300, "passkey", frozenset(), Outcome.ALLOW, "mfa_fresh"),
    (300, "totp", frozenset(), Outcome.STEP_UP, "mfa_factor_not_accepted"),
    (300, None, frozenset(), Outcome.STEP_UP, "mfa_factor_not_accepted"),
    (0, "totp", frozenset({"totp"}), Outcome.STEP_UP, "mfa_per_action"),
    (0, "totp", frozenset({"totp", "passkey"}), Outcome.ALLOW, "mfa_one_time"),
    (0, "passkey", frozenset(), Outcome.STEP_UP, "mfa_per_action"),
])
def test_only_the_factors_a_tier_names_count(freshness, factor, one_time, outcome, rule):
    decision = decide_with(freshness=freshness, factor=factor, one_time=one_time)
    assert decision.outcome is outcome
    fired = decision.reasons[0] if outcome is not Outcome.ALLOW else decision.reasons[-1]
    assert fired.rule == rule


def test_a_refusal_names_the_accepted_factors_and_how_to_get_one():
    reason = decide_with(freshness=300, factor="totp").reasons[0]
    assert reason.message == ("This sensitive action needs a confirmation in the last 5 min. "
                              "Accepted here: a passkey.")
    assert reason.values["accepted_factors"] == ["passkey"] and reason.values["used_factor"] == "totp"
    assert "Add one under Security (/accounts/mfa/)" in reason.remedy


def test_a_tier_that_names_nothing_keeps_every_factor_and_the_old_sentences():
    decision = decide_with(freshness=300, factor="totp", accepted=())
    assert decision.allowed
    stale = decide_with(freshness=300, factor="totp", age=None, accepted=())
    assert stale.reasons[0].message == "This sensitive action needs a code confirmed in the last 5 min."
    assert "accepted_factors" not in stale.reasons[0].values


def test_the_step_up_page_reads_the_accepted_factors_back_from_the_decisions_sentence_only():
    reason = decide_with(freshness=0, factor="totp").reasons[0].message
    assert step_up_ask(reason).accepted == {"passkey"}
    forged = "This sensitive action needs a fresh confirmation for this action alone. Accepted here: call 555."
    assert step_up_ask(forged).sentence == "" and step_up_ask(forged).accepted == frozenset()


@pytest.mark.django_db
def test_a_tier_refuses_an_unknown_factor_or_action_class():
    tier = TierFactory(name="odd", accepted_factors={"sensitive": ["sms"]})
    with pytest.raises(ValidationError, match="non-empty list of idp, passkey, totp"):
        tier.full_clean()
    tier.accepted_factors = {"delete": ["passkey"]}
    with pytest.raises(ValidationError, match="not an action class"):
        tier.full_clean()


@pytest.mark.django_db
def test_the_simulator_shows_which_factors_count_and_why_a_code_is_refused():
    tier = TierFactory(name="critical-web", mfa_sensitive=300, accepted_factors={"sensitive": ["passkey"]})
    resource = ResourceFactory(slug="payroll", tier=tier)
    user = person("erin")
    action = Action("http", ActionClass.SENSITIVE, "POST", "/pay")
    with_code = simulate(user, resource, action, mfa_age=10)
    assert with_code.decision.reasons[0].rule == "mfa_factor_not_accepted"
    summary = dict(simulation_summary(with_code))
    assert summary["Second factors that count for sensitive actions"] == "a passkey"
    assert summary["Last MFA made with"] == "an authenticator app code"
    assert simulate(user, resource, action, mfa_age=10, mfa_factor="passkey").decision.allowed
    assert ("Second factors that count", "sensitive: a passkey") in tier_rules(tier)
