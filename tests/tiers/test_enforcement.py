"""Enforcement end to end in-process: gather, decide, one-time grants, audit."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from portal.audit.models import AuditEvent
from tests.conftest import sign_in
from tests.factories import totp_code
from tests.tiers.factories import ResourceFactory, TierFactory
from tiers.enforcement import authorize, load_resource, step_up_url
from tiers.types import Action, ActionClass, Outcome

pytestmark = pytest.mark.django_db


@pytest.fixture
def per_action_app():
    tier = TierFactory(name="strict", mfa_write=0)
    return load_resource(ResourceFactory(slug="payroll", tier=tier).slug)


def post(path: str = "/pay") -> Action:
    return Action("http", ActionClass.WRITE, "POST", path)


def test_write_freshness_zero_asks_for_a_code_on_every_post_and_a_grant_works_once(
        client, signed_in_employee, per_action_app):
    user, session = signed_in_employee, client.session
    first = authorize(user, session, "127.0.0.1", per_action_app, post())
    assert first.outcome is Outcome.STEP_UP and first.reasons[0].rule == "mfa_per_action"

    url = step_up_url(user, session, per_action_app, post(), first, "/apps/payroll/pay")
    assert "challenge=" in url
    response = client.post(url, {"otp_token": totp_code(user.totp, offset_steps=1)})
    assert response.status_code == 302 and response["Location"] == "/apps/payroll/pay"

    session = client.session  # the step-up rotated the session key
    granted = authorize(user, session, "127.0.0.1", per_action_app, post())
    assert granted.allowed and granted.consumed_one_time_mfa

    replayed = authorize(user, session, "127.0.0.1", per_action_app, post())
    assert replayed.outcome is Outcome.STEP_UP, "a one-time grant must not work twice"


def test_a_grant_is_bound_to_its_action(client, signed_in_employee, per_action_app):
    user, session = signed_in_employee, client.session
    decision = authorize(user, session, "127.0.0.1", per_action_app, post("/pay"))
    url = step_up_url(user, session, per_action_app, post("/pay"), decision, "/apps/payroll/pay")
    client.post(url, {"otp_token": totp_code(user.totp, offset_steps=1)})
    other = authorize(user, client.session, "127.0.0.1", per_action_app, post("/fire-everyone"))
    assert other.outcome is Outcome.STEP_UP


def test_a_grant_is_bound_to_its_session(client, signed_in_employee, per_action_app):
    from tests.conftest import https_client

    user, session = signed_in_employee, client.session
    decision = authorize(user, session, "127.0.0.1", per_action_app, post())
    client.post(step_up_url(user, session, per_action_app, post(), decision, "/apps/payroll/pay"),
                {"otp_token": totp_code(user.totp, offset_steps=1)})
    elsewhere = https_client()
    elsewhere.force_login(user)
    assert authorize(user, elsewhere.session, "127.0.0.1", per_action_app, post()).outcome is Outcome.STEP_UP


def test_every_decision_is_audited_with_its_reasons(client, signed_in_employee, per_action_app):
    authorize(signed_in_employee, client.session, "127.0.0.1", per_action_app, post(), request_id="r-1")
    event = AuditEvent.objects.get(action="decision")
    assert event.outcome == "step_up"
    assert event.resource == "payroll"
    assert event.reasons[0]["rule"] == "mfa_per_action"
    assert event.detail == {"action": "http", "class": "write", "method": "POST", "path": "/pay",
                            "tier": "strict"}
    assert event.request_id == "r-1" and event.zone == "internet"


def test_proxy_allows_can_stay_out_of_the_chain_but_refusals_never_do(client, signed_in_employee):
    app = load_resource(ResourceFactory(slug="wiki2").slug)
    read = Action("http", ActionClass.READ, "GET", "/")
    assert authorize(signed_in_employee, client.session, "127.0.0.1", app, read, audit_allows=False).allowed
    assert not AuditEvent.objects.filter(action="decision").exists()


def test_catalog_apply_puts_a_web_app_in_my_apps(tmp_path, client, employee):
    call_command("seed_demo")  # the demo tiers, among them "low"
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("""
resources:
  - slug: expenses
    name: Expenses
    kind: web
    upstream: http://127.0.0.1:8999/
    tier: low
    groups: [employee]
""")
    call_command("catalog", "apply", str(catalog))
    sign_in(client, employee)
    page = client.get("/").content.decode()
    assert "Expenses" in page and "/apps/expenses/" in page
