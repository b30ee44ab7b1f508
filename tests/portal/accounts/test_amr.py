"""The assertion's ``amr`` says how this session really signed in (RFC 8176 values)."""

from __future__ import annotations

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.test import RequestFactory

from portal.accounts.mfa import AMR_KEY, mark_mfa
from tests.factories import UserFactory, enrol_totp

pytestmark = pytest.mark.django_db


def _request_with(amr: list[str] | None):
    request = RequestFactory().get("/")
    request.session = SessionStore()
    if amr is not None:
        request.session[AMR_KEY] = amr
    request.user = UserFactory(username="amy")
    return request


def test_a_password_and_code_sign_in_says_pwd_and_otp():
    request = _request_with(None)
    mark_mfa(request, enrol_totp(request.user))
    assert request.session[AMR_KEY] == ["pwd", "otp"]


def test_a_federated_sign_in_keeps_the_idps_methods_and_adds_the_portals_code():
    request = _request_with(["fed", "pwd"])
    mark_mfa(request, enrol_totp(request.user))
    assert request.session[AMR_KEY] == ["otp", "fed", "pwd"], "the portal's own code comes before fed"


def test_a_portal_code_on_top_of_an_idp_that_also_said_otp_still_reads_as_the_portals_code():
    from tiers.context import factor_of_amr

    request = _request_with(["fed", "pwd", "otp"])
    assert factor_of_amr(request.session[AMR_KEY]) == "idp"
    mark_mfa(request, enrol_totp(request.user))
    assert request.session[AMR_KEY] == ["otp", "fed", "pwd", "otp"]
    assert factor_of_amr(request.session[AMR_KEY]) == "totp"
