"""The audit trail is append-only and tamper-evident: every change, removal or insertion shows."""

from __future__ import annotations

import itertools

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from portal.audit.chain import GENESIS, record, verify_chain
from portal.audit.models import AppendOnlyError, AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def chain():
    return [record("login.password", outcome="success", actor=f"user{i}", reasons=[{"rule": "r", "n": i}],
                   client_address="10.0.0.1", detail={"i": i}) for i in range(5)]


def raw(sql: str, params: list | None = None) -> None:
    """Tamper the way an attacker with database access would: raw SQL, no ORM, no trigger."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        cursor.execute(sql, params or [])
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")


def test_events_link_into_one_chain(chain):
    assert chain[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(chain):
        assert after.prev_hash == before.hash
        assert after.seq == before.seq + 1


def test_an_untouched_chain_verifies(chain, capsys):
    assert verify_chain().ok
    call_command("verify_audit")
    assert "5 events verified" in capsys.readouterr().out


def test_a_changed_row_is_caught(chain):
    raw("UPDATE audit_auditevent SET outcome = 'failure' WHERE seq = 3")
    report = verify_chain()
    assert report.problems == ["event #3 was changed after it was written"]


def test_a_deleted_row_is_caught(chain):
    raw("DELETE FROM audit_auditevent WHERE seq = 2")
    problems = verify_chain().problems
    assert "events #2..#2 are missing (deleted)" in problems


def test_rows_cut_off_the_end_are_caught(chain):
    raw("DELETE FROM audit_auditevent WHERE seq >= 4")
    assert "events #4..#5 at the end of the chain are missing (deleted)" in verify_chain().problems


def test_an_inserted_row_is_caught(chain):
    last = chain[-1]
    raw("""INSERT INTO audit_auditevent (seq, time, actor, action, resource, outcome, reasons,
           client_address, zone, device, request_id, detail, prev_hash, hash)
           VALUES (%s, %s, 'mallory', 'login.password', '', 'success', '[]', '', '', '', '', '{}', %s, %s)""",
        [last.seq + 1, last.time, last.hash, "f" * 64])
    problems = verify_chain().problems
    assert any("#6" in p for p in problems)


def test_a_forged_row_in_the_middle_is_caught(chain):
    raw("UPDATE audit_auditevent SET seq = seq + 100 WHERE seq >= 3")
    raw("""INSERT INTO audit_auditevent (seq, time, actor, action, resource, outcome, reasons,
           client_address, zone, device, request_id, detail, prev_hash, hash)
           VALUES (3, %s, 'mallory', 'x', '', 'success', '[]', '', '', '', '', '{}', %s, %s)""",
        [chain[2].time, chain[1].hash, "e" * 64])
    assert not verify_chain().ok


def test_verify_audit_command_fails_and_lists_each_break(chain, capsys):
    raw("UPDATE audit_auditevent SET actor = 'someone-else' WHERE seq = 1")
    raw("DELETE FROM audit_auditevent WHERE seq = 4")
    with pytest.raises(CommandError, match="audit chain broken"):
        call_command("verify_audit")
    err = capsys.readouterr().err
    assert "event #1 was changed" in err
    assert "events #4..#4 are missing" in err


def test_the_orm_refuses_to_change_or_remove_events(chain):
    event = chain[0]
    event.outcome = "failure"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(seq=1).update(outcome="x")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    assert verify_chain().ok


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the trigger exists on PostgreSQL only")
def test_postgres_refuses_raw_update_and_delete(chain):
    for sql in ["UPDATE audit_auditevent SET outcome = 'x'", "DELETE FROM audit_auditevent"]:
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), \
                connection.cursor() as cursor:
            cursor.execute(sql)
    assert verify_chain().ok


def test_a_change_made_in_django_admin_is_in_the_chain(client):
    from tests.conftest import sign_in
    from tests.factories import UserFactory, enrol_totp

    admin = UserFactory(username="root-admin", role="admin")
    admin.is_superuser = True
    admin.save()
    admin.totp = enrol_totp(admin)
    target = UserFactory(username="target-user")
    sign_in(client, admin)
    page = client.get(f"/admin/auth/user/{target.pk}/change/")
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None and not isinstance(v, (list, tuple))}
    data.update({"username": "target-user", "is_active": "", "date_joined_0": "2026-01-01",
                 "date_joined_1": "00:00:00", "groups": [], "user_permissions": []})
    data.pop("password", None)
    data.pop("last_login", None)
    client.post(f"/admin/auth/user/{target.pk}/change/", data)
    event = AuditEvent.objects.filter(action="admin.change").latest("seq")
    assert event.actor == "root-admin"
    assert event.detail["model"] == "auth.user" and event.detail["object"] == "target-user"
    assert verify_chain().ok
