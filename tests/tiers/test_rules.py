"""A tier's rules are declared once (tiers/rules.py): the model, the decision's policy, the form,
the catalog's keys and the four-eyes check all follow the table."""

from __future__ import annotations

import dataclasses

import pytest

from tests.tiers.factories import NetworkZoneFactory, TierFactory
from tiers.catalog import MFA_KEYS, TIER_KEYS
from tiers.context import tier_policy
from tiers.forms import TierRulesForm
from tiers.models import AccessMode, Tier
from tiers.policy_changes import RULE_KEYS
from tiers.rules import (
    RULES_BY_NAME,
    STREAM_FLAG_MESSAGE,
    TIER_RULES,
    Kind,
    combination_problems,
    factors_widened,
    normal_factors,
    policy_values,
)
from tiers.types import StreamControl, TierPolicy

DEFAULTS = {rule.name: rule.default for rule in TIER_RULES}


def test_every_rule_the_decision_reads_is_a_field_of_its_policy_and_nothing_else_is():
    policy_fields = {f.name for f in dataclasses.fields(TierPolicy)} - {"name"}

    assert policy_fields == {rule.name for rule in TIER_RULES if rule.decides}


def test_the_policy_built_from_the_rules_defaults_is_the_policys_own_default():
    assert TierPolicy(name="x", **policy_values(DEFAULTS)) == TierPolicy(name="x")


@pytest.mark.parametrize("rule", TIER_RULES, ids=lambda rule: rule.name)
def test_the_model_has_one_field_per_rule_with_its_label_help_and_default(rule):
    field = Tier._meta.get_field(rule.name)

    assert (field.verbose_name, field.help_text) == (rule.label, rule.help)
    if rule.kind not in (Kind.ZONES, Kind.FACTORS):
        assert field.default == rule.default
        assert field.null is rule.nullable


def test_the_tier_form_the_catalog_keys_and_four_eyes_follow_the_table():
    assert list(TierRulesForm().fields) == [rule.name for rule in TIER_RULES]
    assert TIER_KEYS[:3] == ("name", "rank", "description") and "accepted_factors" in TIER_KEYS
    assert "zones" in TIER_KEYS and "allowed_zones" not in TIER_KEYS
    assert MFA_KEYS == ("read", "write", "sensitive")
    assert set(RULE_KEYS) == set(RULES_BY_NAME) - {"description"}


def test_the_access_modes_are_the_models_weakest_first():
    assert [v for v, _ in RULES_BY_NAME["access_mode"].choices] == ["proxy", "stream", "deny"]
    assert list(RULES_BY_NAME["access_mode"].choices) == list(AccessMode.choices)


@pytest.mark.django_db
def test_a_tier_row_becomes_the_decisions_policy_with_zones_and_factors_as_sets():
    office = NetworkZoneFactory(name="office")
    tier = TierFactory(name="pay", access_mode="stream", clipboard_in="step_up", zones=[office],
                       accepted_factors={"sensitive": ["passkey"]})

    policy = tier_policy(tier)

    assert policy.allowed_zones == frozenset({"office"})
    assert policy.accepted_factors == (("sensitive", frozenset({"passkey"})),)
    assert policy.clipboard_in is StreamControl.STEP_UP
    assert policy.mfa_sensitive == 0 and policy.rank == 10


@pytest.mark.parametrize(("values", "problems"), [
    ({"access_mode": "proxy", "recording": True}, {"recording": STREAM_FLAG_MESSAGE}),
    ({"access_mode": "proxy", "read_only": True, "watermark": True},
     {"read_only": STREAM_FLAG_MESSAGE, "watermark": STREAM_FLAG_MESSAGE}),
    ({"access_mode": "stream", "recording": True, "read_only": True}, {}),
    ({"access_mode": "proxy", "clipboard_in": "allow"}, {}),
    ({"accepted_factors": {"sensitive": ["sms"]}},
     {"accepted_factors": "The factors for sensitive must be a non-empty list of idp, passkey, totp."}),
])
def test_rules_that_are_fine_alone_but_not_together_are_named_by_field(values, problems):
    assert combination_problems(values) == problems


@pytest.mark.parametrize(("value", "normal"), [
    ({}, {}),
    (None, {}),
    ({"sensitive": ["totp", "passkey", "idp"]}, {}),  # every factor named: any counts
    ({"sensitive": ["totp", "passkey"]}, {"sensitive": ["passkey", "totp"]}),  # not the IdP's MFA
    ({"write": ["passkey", "passkey"], "read": []}, {"write": ["passkey"]}),
    ({"sensitive": ["passkey"], "read": ["totp"]}, {"read": ["totp"], "sensitive": ["passkey"]}),
])
def test_accepted_factors_have_one_spelling(value, normal):
    assert normal_factors(value) == normal
    assert list(normal_factors(value)) == list(normal)


@pytest.mark.parametrize(("old", "new", "widened"), [
    ({"sensitive": ["passkey"]}, {}, True),
    ({"sensitive": ["passkey"]}, {"sensitive": ["totp"]}, True),
    ({"sensitive": ["passkey"]}, {"sensitive": ["passkey", "totp"]}, True),
    ({}, {"sensitive": ["passkey"]}, False),
    ({"sensitive": ["passkey"]}, {"sensitive": ["passkey"], "write": ["passkey"]}, False),
    ({"read": ["totp"]}, {"read": ["totp"]}, False),
])
def test_counting_more_factors_for_any_action_class_is_a_widening(old, new, widened):
    assert factors_widened(old, new) is widened
