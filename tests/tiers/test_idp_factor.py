"""The company sign-in's MFA is a factor of its own (``idp``): read from the session's amr,
named in words, counted more only with a second admin, and kept where codes counted."""

from __future__ import annotations

import importlib

import pytest

from tiers.context import factor_of_amr
from tiers.rules import accepted_factors_problem, factors_widened, normal_factors
from tiers.types import factor_words

migration = importlib.import_module("tiers.migrations.0007_accepted_factors_idp")


@pytest.mark.parametrize(("amr", "factor"), [
    (["pwd", "otp"], "totp"),
    (["pwd", "hwk", "user"], "passkey"),
    (["fed", "pwd", "mfa"], "idp"),
    (["fed", "pwd", "otp"], "idp"),  # the IdP's code is the IdP's MFA, not the portal's
    (["fed", "hwk"], "idp"),  # nor is the IdP's security key a portal passkey
    (["otp", "fed", "pwd", "otp"], "totp"),  # a portal code on top of the IdP sign-in
    (["pwd"], None),
    ("otp", None),
])
def test_the_factor_of_the_last_confirmation_is_read_from_the_amr(amr, factor):
    assert factor_of_amr(amr) == factor


def test_the_idp_factor_has_words_and_is_a_valid_catalog_value():
    assert factor_words(frozenset({"idp", "totp"})) == "an authenticator app code or your company sign-in's MFA"
    assert accepted_factors_problem({"write": ["idp"]}) == ""
    assert normal_factors({"write": ["totp", "passkey", "idp"]}) == {}


def test_counting_the_idps_mfa_where_it_did_not_count_lowers_protection():
    assert factors_widened({"write": ["totp"]}, {"write": ["idp", "totp"]})
    assert factors_widened({"sensitive": ["passkey"]}, {})
    assert not factors_widened({"write": ["idp", "totp"]}, {"write": ["totp"]})


def test_the_migration_keeps_todays_behaviour_where_codes_counted_and_leaves_passkey_only_alone():
    assert migration._with_idp({"write": ["totp"], "sensitive": ["passkey"]}) == {
        "write": ["idp", "totp"], "sensitive": ["passkey"]}
    assert migration._with_idp({"read": ["passkey", "totp"]}) == {}, "every factor named: any counts"
    assert migration._with_idp({}) == {}
