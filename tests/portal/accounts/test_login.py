"""Signing in: password, then a second factor, with nothing reachable in between."""

from __future__ import annotations

import pytest
from django_otp.plugins.otp_static.models import StaticToken

from portal.audit.models import AuditEvent
from tests.conftest import sign_in
from tests.factories import PASSWORD, UserFactory, enrol_totp, totp_code

pytestmark = pytest.mark.django_db


def test_anonymous_visitor_is_sent_to_login_with_next(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/")


def test_password_alone_reaches_nothing_but_the_mfa_step(client, employee):
    sign_in(client, employee, with_mfa=False)
    for path in ["/", "/admin/", "/accounts/step-up/?next=/"]:
        response = client.get(path)
        assert response.status_code == 302, path
        assert response["Location"].startswith("/accounts/mfa/verify/"), path
    assert client.get("/accounts/mfa/verify/").status_code == 200


def test_password_alone_cannot_enrol_another_authenticator(client, employee):
    sign_in(client, employee, with_mfa=False)
    response = client.get("/accounts/mfa/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/mfa/verify/"


def test_password_and_totp_open_my_apps(client, employee):
    sign_in(client, employee)
    response = client.get("/")
    assert response.status_code == 200
    assert b"My apps" in response.content
    assert isinstance(client.session["mfa_time"], int)


def test_session_id_changes_at_login_and_at_mfa(client, employee):
    client.get("/accounts/login/")
    client.session.save()
    before = client.session.session_key
    client.post("/accounts/login/", {"username": employee.username, "password": PASSWORD})
    after_password = client.cookies["sessionid"].value
    assert after_password != before
    client.post("/accounts/mfa/verify/", {"otp_token": totp_code(employee.totp)})
    assert client.cookies["sessionid"].value != after_password


def test_a_totp_code_cannot_be_used_twice_in_its_time_step(client, employee):
    code = totp_code(employee.totp)
    sign_in_ok = client.post("/accounts/login/", {"username": employee.username, "password": PASSWORD})
    assert sign_in_ok.status_code == 302
    assert client.post("/accounts/mfa/verify/", {"otp_token": code}).status_code == 302
    client.post("/accounts/logout/")

    client.post("/accounts/login/", {"username": employee.username, "password": PASSWORD})
    replay = client.post("/accounts/mfa/verify/", {"otp_token": code})
    assert replay.status_code == 401
    assert b"already used" in replay.content
    assert client.get("/")["Location"].startswith("/accounts/mfa/verify/")


def test_repeated_wrong_codes_are_throttled_even_for_the_right_code(client, employee):
    sign_in(client, employee, with_mfa=False)
    wrong = f"{(int(totp_code(employee.totp)) + 1) % 1_000_000:06d}"
    statuses = [client.post("/accounts/mfa/verify/", {"otp_token": wrong}).status_code
                for _ in range(4)]
    assert 429 in statuses
    right = client.post("/accounts/mfa/verify/", {"otp_token": totp_code(employee.totp)})
    assert right.status_code == 429
    assert b"Too many wrong codes" in right.content
    assert AuditEvent.objects.filter(action="mfa.verify", outcome="throttled").exists()


def test_wrong_passwords_are_throttled_with_a_clear_message(client, employee):
    for _ in range(5):
        client.post("/accounts/login/", {"username": employee.username, "password": "nope"})
    response = client.post("/accounts/login/", {"username": employee.username, "password": PASSWORD})
    assert response.status_code == 429
    assert b"try again in" in response.content
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="login.password", outcome="throttled").exists()


def test_login_does_not_reveal_which_usernames_exist(client, employee):
    unknown = client.post("/accounts/login/", {"username": "nobody-here", "password": "x" * 12})
    wrong = client.post("/accounts/login/", {"username": employee.username, "password": "x" * 12})
    assert unknown.status_code == wrong.status_code == 401
    strip = lambda r: r.content.decode().replace("nobody-here", "").replace(employee.username, "")  # noqa: E731
    assert "csrfmiddlewaretoken" in strip(unknown)
    assert strip(unknown).split("csrfmiddlewaretoken")[0] == strip(wrong).split("csrfmiddlewaretoken")[0]


def test_a_locked_user_with_a_wrong_password_gets_the_same_answer_as_anyone(client, employee):
    employee.is_active = False
    employee.save()
    locked = client.post("/accounts/login/", {"username": employee.username, "password": "x" * 12})
    unknown = client.post("/accounts/login/", {"username": "nobody-here", "password": "x" * 12})
    assert locked.status_code == unknown.status_code == 401
    assert b"not right" in locked.content and b"locked" not in locked.content


@pytest.mark.parametrize("target", [
    "https://elsewhere.example/", "//elsewhere.example/", "/\\elsewhere.example",
    "https:elsewhere.example", "javascript:alert(1)",
])
def test_next_pointing_elsewhere_is_ignored_after_login(client, employee, target):
    client.post(f"/accounts/login/?next={target}",
                {"username": employee.username, "password": PASSWORD, "next": target})
    response = client.post("/accounts/mfa/verify/", {"otp_token": totp_code(employee.totp)})
    assert response.status_code == 302
    assert response["Location"] == "/"


def test_next_inside_the_portal_is_honoured_after_mfa(client, employee):
    client.post("/accounts/login/?next=/accounts/mfa/",
                {"username": employee.username, "password": PASSWORD})
    response = client.post("/accounts/mfa/verify/", {"otp_token": totp_code(employee.totp)})
    assert response["Location"] == "/accounts/mfa/"


def test_login_form_without_csrf_token_is_refused(csrf_client, employee):
    response = csrf_client.post("/accounts/login/", {"username": employee.username, "password": PASSWORD})
    assert response.status_code == 403
    assert b"did not come from the portal" in response.content
    assert "_auth_user_id" not in csrf_client.session


def test_logout_needs_a_post(client, signed_in_employee):
    assert client.get("/accounts/logout/").status_code == 200
    assert client.get("/").status_code == 200
    client.post("/accounts/logout/")
    assert client.get("/").status_code == 302


def test_every_sign_in_step_is_audited(client, employee):
    client.post("/accounts/login/", {"username": employee.username, "password": "bad-password"})
    sign_in(client, employee)
    seen = list(AuditEvent.objects.filter(actor=employee.username)
                .order_by("seq").values_list("action", "outcome"))
    assert seen == [("login.password", "failure"), ("login.password", "success"),
                    ("mfa.verify", "success")]


class TestEnrolment:
    def test_new_user_is_made_to_enrol_before_anything_else(self, client):
        user = UserFactory(username="newbie")
        client.post("/accounts/login/", {"username": "newbie", "password": PASSWORD})
        assert client.get("/")["Location"].startswith("/accounts/mfa/verify/")
        assert client.get("/accounts/mfa/verify/")["Location"] == "/accounts/mfa/"
        page = client.get("/accounts/mfa/")
        assert page.status_code == 200
        assert b"<svg" in page.content and b"otpauth://totp/" in page.content
        assert user.totpdevice_set.get().confirmed is False

    def test_right_code_turns_mfa_on_and_shows_backup_codes_once(self, client):
        user = UserFactory(username="newbie")
        client.post("/accounts/login/", {"username": "newbie", "password": PASSWORD})
        client.get("/accounts/mfa/")
        device = user.totpdevice_set.get()
        response = client.post("/accounts/mfa/", {"otp_token": totp_code(device)})
        assert response.status_code == 200
        codes = [t.token for t in StaticToken.objects.filter(device__user=user)]
        assert len(codes) == 10
        for code in codes:
            assert code.encode() in response.content
        assert client.get("/").status_code == 200
        status_page = client.get("/accounts/mfa/")
        assert not any(code.encode() in status_page.content for code in codes)

    def test_wrong_enrolment_code_leaves_mfa_off(self, client):
        user = UserFactory(username="newbie")
        client.post("/accounts/login/", {"username": "newbie", "password": PASSWORD})
        client.get("/accounts/mfa/")
        device = user.totpdevice_set.get()
        wrong = f"{(int(totp_code(device)) + 5) % 1_000_000:06d}"
        response = client.post("/accounts/mfa/", {"otp_token": wrong})
        assert response.status_code == 400
        assert b"not right" in response.content
        device.refresh_from_db()
        assert device.confirmed is False
        assert client.get("/")["Location"].startswith("/accounts/mfa/verify/")


def test_a_backup_code_works_exactly_once(client, employee):
    from portal.accounts.mfa import issue_backup_codes

    code = issue_backup_codes(employee)[0]
    client.post("/accounts/login/", {"username": employee.username, "password": PASSWORD})
    assert client.post("/accounts/mfa/verify/", {"otp_token": code}).status_code == 302
    client.post("/accounts/logout/")
    client.post("/accounts/login/", {"username": employee.username, "password": PASSWORD})
    assert client.post("/accounts/mfa/verify/", {"otp_token": code}).status_code == 401


def test_admin_pages_need_staff_and_mfa(client):
    admin = UserFactory(username="boss", role="admin")
    admin.totp = enrol_totp(admin)
    sign_in(client, admin)
    assert client.get("/admin/").status_code == 200


def test_roles_hold_exactly_their_permissions():
    from django.contrib.auth.models import Group

    from portal.accounts.roles import ensure_roles

    ensure_roles()
    employee = set(Group.objects.get(name="employee").permissions.values_list("codename", flat=True))
    auditor = set(Group.objects.get(name="auditor").permissions.values_list("codename", flat=True))
    admin = set(Group.objects.get(name="admin").permissions.values_list("codename", flat=True))
    assert employee == {"use_portal"}
    assert auditor == {"view_audit"}
    assert {"manage_catalog", "approve_access", "manage_sessions", "change_resource", "change_tier"} <= admin
    assert "view_audit" not in admin
