"""Sign-in hardening found by probing the running portal (issues 12 and 16): the admin's own
login, parallel guesses, many people behind one address, unstorable input, the step-up
page's text, and what a locked or mistaken person is told."""

from __future__ import annotations

import re
import threading
import time

import pytest
from django.contrib.auth.signals import user_login_failed
from django.db import connection

from portal.accounts.lockout import lock_user
from portal.accounts.signin import codes_wait_message, wait_message
from portal.audit.models import AuditEvent
from tests.conftest import https_client, sign_in
from tests.factories import PASSWORD, UserFactory, enrol_totp, totp_code
from tests.tiers.factories import ResourceFactory, TierFactory
from tiers.enforcement import authorize, load_resource, step_up_url
from tiers.types import Action, ActionClass

pytestmark = pytest.mark.django_db


@pytest.fixture
def boss(db):
    user = UserFactory(username="boss", role="admin")
    user.totp = enrol_totp(user)
    return user


class PasswordChecks:
    """Counts the passwords Django actually checked and found wrong (its own signal)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, **kwargs: object) -> None:
        with self._lock:
            self.count += 1


@pytest.fixture
def wrong_password_checks():
    checks = PasswordChecks()
    user_login_failed.connect(checks, weak=False)
    yield checks
    user_login_failed.disconnect(checks)


# --- /admin/login/ goes through the portal's sign-in ------------------------------------------

def test_the_admin_login_page_has_no_password_form_and_sends_people_to_the_portal_sign_in(client):
    response = client.get("/admin/login/?next=/admin/auth/user/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=%2Fadmin%2Fauth%2Fuser%2F"
    assert b"password" not in response.content
    elsewhere = client.get("/admin/login/?next=https://elsewhere.example/")
    assert elsewhere["Location"] == "/accounts/login/?next=%2Fadmin%2F"
    assert client.get("/admin/")["Location"].startswith("/admin/login/")


def test_eight_wrong_admin_passwords_at_admin_login_are_not_checked_there_but_are_at_the_portal(
        client, boss, wrong_password_checks):
    for _ in range(8):
        response = client.post("/admin/login/", {"username": "boss", "password": "wrong-guess"})
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")
    right = client.post("/admin/login/", {"username": "boss", "password": PASSWORD})
    assert "_auth_user_id" not in client.session, "the admin's own form must not sign anyone in"
    assert right.status_code == 302
    assert wrong_password_checks.count == 0

    statuses = [client.post("/accounts/login/", {"username": "boss", "password": "wrong-guess"})
                .status_code for _ in range(8)]
    assert statuses == [401] * 5 + [429] * 3
    assert wrong_password_checks.count == 5
    audited = list(AuditEvent.objects.filter(action="login.password", actor="boss")
                   .values_list("outcome", flat=True).order_by("seq"))
    assert audited == ["failure"] * 5 + ["throttled"] * 3


def test_an_admin_signs_in_to_the_admin_site_with_password_and_code(client, boss):
    first = client.get("/admin/")
    login_page = client.get(client.get(first["Location"])["Location"])
    assert login_page.status_code == 200 and b'name="password"' in login_page.content
    client.post("/accounts/login/?next=/admin/", {"username": "boss", "password": PASSWORD,
                                                  "next": "/admin/"})
    assert client.get("/admin/")["Location"].startswith("/accounts/mfa/verify/")
    done = client.post("/accounts/mfa/verify/", {"otp_token": totp_code(boss.totp)})
    assert done["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/login/")["Location"] == "/admin/"


def test_an_employee_sent_to_the_admin_login_is_told_it_is_for_staff_without_a_loop(
        client, signed_in_employee):
    assert client.get("/admin/")["Location"].startswith("/admin/login/")
    response = client.get("/admin/login/?next=/admin/")
    assert response.status_code == 403
    assert b"for portal staff only" in response.content


# --- parallel guesses and many people behind one address --------------------------------------

def test_forty_parallel_wrong_passwords_check_at_most_the_limit(transactional_db, wrong_password_checks):
    UserFactory(username="target")
    clients = [https_client() for _ in range(40)]
    for each in clients:
        each.get("/accounts/login/")
    start = threading.Barrier(40)
    statuses: list[int] = []

    def guess(each) -> None:
        start.wait()
        try:
            response = each.post("/accounts/login/", {"username": "target", "password": "wrong-guess"})
            statuses.append(response.status_code)
        finally:
            connection.close()  # a server hands it back to the pool; the test client does not

    threads = [threading.Thread(target=guess, args=(each,)) for each in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(statuses) == [401] * 5 + [429] * 35
    assert wrong_password_checks.count == 5


def test_people_who_mistype_then_get_it_right_do_not_lock_out_the_next_person_at_their_address(
        client, employee):
    people = [employee] + [UserFactory(username=f"colleague{i}") for i in range(3)]
    for person in people:
        for _ in range(4):
            assert client.post("/accounts/login/", {"username": person.username,
                                                    "password": "typo"}).status_code == 401
        response = client.post("/accounts/login/", {"username": person.username, "password": PASSWORD})
        assert response.status_code == 302, f"{person.username} was refused after the others"
        client.post("/accounts/logout/")


def test_a_success_clears_the_usernames_failures(client, employee):
    for _ in range(4):
        client.post("/accounts/login/", {"username": employee.username, "password": "typo"})
    sign_in(client, employee, with_mfa=False)
    client.post("/accounts/logout/")
    for _ in range(4):
        assert client.post("/accounts/login/", {"username": employee.username,
                                                "password": "typo"}).status_code == 401
    assert client.post("/accounts/login/", {"username": employee.username,
                                            "password": PASSWORD}).status_code == 302


def test_spraying_many_usernames_from_one_address_is_still_stopped(client, employee, settings):
    settings.PORTAL_LOGIN_ADDRESS_FAILURE_LIMIT = 12
    statuses = [client.post("/accounts/login/", {"username": f"guess{i}", "password": "Summer2024"})
                .status_code for i in range(14)]
    assert statuses == [401] * 12 + [429] * 2
    refused = client.post("/accounts/login/", {"username": employee.username, "password": PASSWORD})
    assert refused.status_code == 429


# --- input the database cannot store -----------------------------------------------------------

NUL = "bad\x00value"


@pytest.mark.parametrize("field", ["username", "password", "next"])
def test_a_nul_byte_in_a_sign_in_field_is_a_400_that_says_the_input_was_invalid(client, employee, field):
    data = {"username": employee.username, "password": PASSWORD, "next": "/"}
    data[field] = NUL
    response = client.post("/accounts/login/", data)
    assert response.status_code == 400
    assert b"invalid input" in response.content and b"unreachable" not in response.content
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="login.password", outcome="invalid_input",
                                     detail__fields=[field]).exists()


@pytest.mark.parametrize("field", ["otp_token", "next"])
def test_a_nul_byte_in_the_code_step_is_a_400_and_the_code_still_works_after(client, employee, field):
    sign_in(client, employee, with_mfa=False)
    code = totp_code(employee.totp)
    response = client.post(f"/accounts/mfa/verify/?{field}=%00", {"otp_token": NUL} if field == "otp_token"
                           else {"otp_token": code})
    assert response.status_code == 400
    assert b"invalid input" in response.content
    assert AuditEvent.objects.filter(action="mfa.verify", outcome="invalid_input").exists()
    assert client.post("/accounts/mfa/verify/", {"otp_token": code}).status_code == 302


@pytest.mark.parametrize("field", ["otp_token", "next", "challenge", "reason"])
def test_a_nul_byte_in_a_step_up_field_is_a_400_and_nobody_is_signed_out(client, signed_in_employee, field):
    data = {"otp_token": totp_code(signed_in_employee.totp, offset_steps=1), "next": "/"}
    data[field] = NUL
    response = client.post("/accounts/step-up/", data)
    assert response.status_code == 400
    assert b"invalid input" in response.content and b"unreachable" not in response.content
    assert client.get("/").status_code == 200, "a refused input must not sign anyone out"
    assert AuditEvent.objects.filter(action="mfa.step_up", outcome="invalid_input").exists()
    done = client.post("/accounts/step-up/?next=/accounts/mfa/",
                       {"otp_token": totp_code(signed_in_employee.totp, offset_steps=1)})
    assert done.status_code == 302 and done["Location"] == "/accounts/mfa/"
    success = AuditEvent.objects.get(action="mfa.step_up", outcome="success")
    assert success.detail["next"] == "/accounts/mfa/"


@pytest.mark.parametrize("target", ["/ok\x00", "/ok\r\nSet-Cookie:x=1", "/ok\x7f"])
def test_a_next_with_control_characters_is_never_followed(client, employee, target):
    client.post("/accounts/login/", {"username": employee.username, "password": PASSWORD})
    session = client.session
    session["next_after_mfa"] = target
    session.save()
    response = client.post("/accounts/mfa/verify/", {"otp_token": totp_code(employee.totp)})
    assert response["Location"] == "/"


# --- the step-up page says only what the portal said ------------------------------------------

def test_the_step_up_page_does_not_show_reason_text_from_a_link(client, signed_in_employee):
    lure = "Your account is compromised. Call +1 555 0100 and read them this code"
    response = client.get("/accounts/step-up/", {"next": "/", "reason": lure})
    assert response.status_code == 200
    assert b"compromised" not in response.content and b"555" not in response.content
    assert b"needs a fresh confirmation" in response.content


def test_the_step_up_page_shows_the_reason_the_decision_gave(client, signed_in_employee):
    user = signed_in_employee
    strict = load_resource(ResourceFactory(slug="payroll", tier=TierFactory(name="strict", mfa_write=0)).slug)
    post = Action("http", ActionClass.WRITE, "POST", "/pay")
    decision = authorize(user, client.session, "127.0.0.1", strict, post)
    page = client.get(step_up_url(user, client.session, strict, post, decision, "/apps/payroll/pay"))
    assert b"This write action needs a fresh code for this action alone." in page.content

    session = client.session
    session["mfa_time"] = int(time.time()) - 3600
    session.save()
    fresh = load_resource(ResourceFactory(slug="wiki", tier=TierFactory(name="fresh", mfa_write=300)).slug)
    decision = authorize(user, client.session, "127.0.0.1", fresh, post)
    page = client.get(step_up_url(user, client.session, fresh, post, decision, "/apps/wiki/pay"))
    assert b"This write action needs a code confirmed in the last 5 min." in page.content


# --- honest messages -------------------------------------------------------------------------

def test_a_locked_user_with_the_right_password_is_told_the_account_is_locked_and_whom_to_ask(
        client, employee, boss):
    lock_user(employee, by=boss.username, reason="laptop reported stolen")
    response = client.post("/accounts/login/", {"username": employee.username, "password": PASSWORD})
    assert response.status_code == 403
    assert b"This account is locked" in response.content
    assert b"locked by boss" in response.content
    assert "_auth_user_id" not in client.session


def test_the_locked_answer_counts_towards_the_throttle_so_it_is_no_password_oracle(client, employee):
    employee.is_active = False
    employee.save()
    statuses = [client.post("/accounts/login/", {"username": employee.username, "password": PASSWORD})
                .status_code for _ in range(6)]
    assert statuses == [403] * 5 + [429]


def test_a_wrong_code_does_not_stay_in_the_code_field(client, employee):
    sign_in(client, employee, with_mfa=False)
    wrong = f"{(int(totp_code(employee.totp)) + 7) % 1_000_000:06d}"
    response = client.post("/accounts/mfa/verify/", {"otp_token": wrong})
    assert response.status_code == 401
    assert wrong.encode() not in response.content
    assert b'name="otp_token"' in response.content


def test_waits_of_one_second_are_said_in_the_singular():
    assert wait_message(1).endswith("try again in 1 second.")
    assert wait_message(30).endswith("try again in 30 seconds.")
    assert codes_wait_message(1) == "Too many wrong codes. Wait 1 second, then enter a new code."
    assert "Wait 2 seconds" in codes_wait_message(2)


def test_the_security_page_says_one_second_not_one_seconds(client, signed_in_employee):
    session = client.session
    session["mfa_time"] = int(time.time()) - 1
    session.save()
    text = client.get("/accounts/mfa/").content.decode()
    count, noun = re.search(r"Last confirmed (\d+) (seconds?) ago", text).groups()
    assert noun == ("second" if count == "1" else "seconds")


def test_a_code_with_a_nul_byte_is_simply_wrong_for_every_caller_of_the_code_check(employee):
    from portal.accounts.mfa import issue_backup_codes, verify_second_factor

    backup = issue_backup_codes(employee)[0]
    for token in ["12\x003456", backup[:4] + "\x00" + backup[4:], "\uff11\uff12\uff13\uff14\uff15\uff16"]:
        assert not verify_second_factor(employee, token).ok
    assert verify_second_factor(employee, backup).ok
