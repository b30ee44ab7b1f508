"""The policy change bus: every change a decision depends on is announced once, after commit.

Each model change in the matrix publishes exactly the domain event the enforcement points
need (tiers/changes.py); nothing else does. The bus itself: caches hear a change at once and
again after commit, live-session pushes only after commit and only where it was made, other
processes through one message, and a rolled-back change not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.sessions.backends.db import SessionStore
from django.db import transaction
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticDevice

from portal.accounts.lockout import lock_user
from portal.passkeys.models import PasskeyDevice
from tests.factories import PASSWORD, UserFactory, enrol_totp
from tests.tiers.factories import NetworkZoneFactory, ResourceFactory, TierFactory
from tiers import changes
from tiers.changes import CatalogChanged, Change, SessionChanged, SubjectChanged
from tiers.context import session_hash
from tiers.models import AccessGrant, ActionRule

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class Heard:
    """What subscribers heard: ``now`` inside the transaction, ``committed`` after it."""

    now: list[Change] = field(default_factory=list)
    committed: list[Change] = field(default_factory=list)
    pushed: list[Change] = field(default_factory=list)  # heard=False: where it was made only
    broadcast: list[dict[str, Any]] = field(default_factory=list)

    def clear(self) -> None:
        self.now.clear()
        self.committed.clear()
        self.pushed.clear()
        self.broadcast.clear()


@pytest.fixture
def heard(monkeypatch) -> Iterator[Heard]:
    record = Heard()

    def at_once(change: Change) -> None:
        if transaction.get_connection().in_atomic_block:
            record.now.append(change)

    monkeypatch.setattr(changes, "broadcast", lambda group, message: record.broadcast.append(message))
    changes.subscribe(at_once, at_once=True)
    changes.subscribe(record.committed.append)
    changes.subscribe(record.pushed.append, heard=False)
    yield record
    for handler in (at_once, record.committed.append, record.pushed.append):
        changes.unsubscribe(handler)


@pytest.fixture
def erin():
    user = UserFactory(username="erin", role="employee")
    user.totp = enrol_totp(user)
    return user


def _new_session(user: Any) -> SessionStore:
    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session.create()
    return session


# --- the matrix: one model change, one event ----------------------------------------------


def _lock(user: Any, ctx: dict[str, Any]) -> None:
    lock_user(user, by="adam", reason="lost laptop")


def _retag(user: Any, ctx: dict[str, Any]) -> None:
    resource = ctx["resource"]
    resource.tier = ctx["critical"]
    resource.save()


def _revoke_grant(user: Any, ctx: dict[str, Any]) -> None:
    grant = ctx["grant"]
    grant.revoked_at = timezone.now()
    grant.save()


def _passkey(user: Any) -> PasskeyDevice:
    return PasskeyDevice.objects.create(user=user, name="laptop", credential_id="cred-1", public_key=b"k",
                                        user_handle="h")


MATRIX: list[tuple[str, Callable[[Any, dict[str, Any]], Any], Callable[[Any, dict[str, Any]], list[Change]]]] = [
    ("a saved account", lambda u, c: u.save(),
     lambda u, c: [SubjectChanged(u.pk, "user changed")]),
    ("a deleted account (its devices and grants with it)", lambda u, c: u.delete(),
     lambda u, c: [SubjectChanged(c["user_id"], "user deleted")]),
    ("a lock names who locked and why, and ends the web session",
     _lock,
     lambda u, c: [SubjectChanged(u.pk, "account locked: lost laptop", "adam"),
                   SessionChanged(session_hash(c["session"].session_key), u.pk, ended=True)]),
    ("a group joined", lambda u, c: u.groups.add(Group.objects.create(name="ops")),
     lambda u, c: [SubjectChanged(u.pk, "group membership changed")]),
    ("a group left, from the group's side", lambda u, c: Group.objects.get(name="employee").user_set.remove(u),
     lambda u, c: [SubjectChanged(u.pk, "group membership changed")]),
    ("a group emptied: nobody knows who was in it", lambda u, c: Group.objects.get(name="employee").user_set.clear(),
     lambda u, c: [SubjectChanged(None, "group membership changed")]),
    ("a group renamed", lambda u, c: Group.objects.filter(name="employee").first().save(),
     lambda u, c: [SubjectChanged(None, "group changed")]),
    ("a permission given", lambda u, c: u.user_permissions.add(Permission.objects.first()),
     lambda u, c: [SubjectChanged(u.pk, "permissions changed")]),
    ("an authenticator app removed", lambda u, c: u.totp.delete(),
     lambda u, c: [SubjectChanged(u.pk, "second factor removed")]),
    ("backup codes made", lambda u, c: StaticDevice.objects.create(user=u, name="backup"),
     lambda u, c: [SubjectChanged(u.pk, "second factor changed")]),
    ("a passkey registered", lambda u, c: _passkey(u),
     lambda u, c: [SubjectChanged(u.pk, "second factor changed")]),
    ("a session deleted", lambda u, c: c["session"].delete(),
     lambda u, c: [SessionChanged(session_hash(c["session"].session_key), u.pk, ended=True)]),
    ("a session saved (MFA, step-up)", lambda u, c: c["session"].save(),
     lambda u, c: [SessionChanged(session_hash(c["session"].session_key))]),
    ("an access grant revoked", _revoke_grant,
     lambda u, c: [SubjectChanged(u.pk, "access grant changed")]),
    ("a resource re-tagged", _retag,
     lambda u, c: [CatalogChanged(frozenset({c["resource"].pk}), why="resource changed")]),
    ("a tier edited", lambda u, c: c["resource"].tier.save(),
     lambda u, c: [CatalogChanged(frozenset(), frozenset({c["resource"].tier_id}), why="tier changed")]),
    ("an action rule added", lambda u, c: ActionRule.objects.create(resource=c["resource"], methods="post",
                                                                   path="/x", action_class="write"),
     lambda u, c: [CatalogChanged(frozenset({c["resource"].pk}), why="action rules changed")]),
    ("a zone edited", lambda u, c: c["zone"].save(),
     lambda u, c: [CatalogChanged(None, why="network zones changed")]),
    ("a resource shared with a person", lambda u, c: c["resource"].allowed_users.add(u),
     lambda u, c: [CatalogChanged(frozenset({c["resource"].pk}), why="sharing changed")]),
    ("a group given two resources, from the group's side",
     lambda u, c: Group.objects.create(name="ops").resources.add(c["resource"], c["other"]),
     lambda u, c: [CatalogChanged(frozenset({c["resource"].pk, c["other"].pk}), why="sharing changed")]),
    ("a zone allowed for a tier", lambda u, c: c["resource"].tier.allowed_zones.add(c["zone"]),
     lambda u, c: [CatalogChanged(frozenset(), frozenset({c["resource"].tier_id}), why="tier zones changed")]),
]


@pytest.mark.parametrize(("change", "make", "expected"), MATRIX, ids=[row[0] for row in MATRIX])
def test_each_change_publishes_its_event_exactly_once_after_commit(heard, erin, change, make, expected):
    resource = ResourceFactory(slug="notes")
    ctx = {"user_id": erin.pk, "resource": resource, "critical": TierFactory(name="critical"), "other": ResourceFactory(slug="wiki"), "zone": NetworkZoneFactory(name="office"),
           "session": _new_session(erin),
           "grant": AccessGrant.objects.create(user=erin, resource=resource, granted_by="adam",
                                               expires_at=timezone.now() + timezone.timedelta(hours=1))}
    heard.clear()

    with transaction.atomic():
        make(erin, ctx)
        assert heard.committed == [], "nothing is delivered before the change commits"

    assert heard.committed == expected(erin, ctx)
    assert heard.pushed == heard.committed  # the live sessions' pushes, once, where it was made
    assert all(c in heard.now for c in heard.committed)  # caches dropped at once too
    assert [c for m in heard.broadcast for c in changes.decode(m)] == heard.committed


def test_a_sign_in_stamp_or_a_new_account_publishes_nothing(heard, erin):
    heard.clear()
    erin.save(update_fields=["last_login"])
    get_user_model().objects.create_user("fred", password=PASSWORD)
    assert heard.committed == []


def test_a_many_to_many_change_outside_the_catalog_leaves_the_catalog_alone(heard, erin):
    heard.clear()
    erin.user_permissions.add(Permission.objects.first())
    Group.objects.create(name="ops").permissions.add(Permission.objects.first())
    assert not any(isinstance(c, CatalogChanged) for c in heard.committed)


# --- the bus ------------------------------------------------------------------------------


def test_a_rolled_back_change_is_dropped_at_once_but_never_announced(heard, erin):
    heard.clear()
    with pytest.raises(RuntimeError), transaction.atomic():
        erin.save()
        raise RuntimeError("the admin's form failed")
    assert heard.now == [SubjectChanged(erin.pk, "user changed")]  # a cache drop costs nothing
    assert heard.committed == heard.pushed == heard.broadcast == []

    erin.save()  # and the next transaction is announced as usual
    assert heard.committed == [SubjectChanged(erin.pk, "user changed")]


def test_a_transactions_changes_are_delivered_once_each_in_one_message(heard, erin):
    resource = ResourceFactory(slug="notes")
    heard.clear()
    with transaction.atomic():
        erin.save()
        resource.save()
        erin.save()
        resource.save()
    assert heard.committed == [SubjectChanged(erin.pk, "user changed"),
                               CatalogChanged(frozenset({resource.pk}), why="resource changed")]
    assert len(heard.broadcast) == 1


def test_a_persons_changes_fold_into_one_that_keeps_who_made_them(heard, erin):
    heard.clear()
    with transaction.atomic():
        erin.save()
        lock_user(erin, by="adam", reason="lost laptop")
        erin.groups.clear()
    assert heard.committed == [SubjectChanged(erin.pk, "account locked: lost laptop", "adam")]


def test_caches_drop_before_other_processes_hear_and_pushes_go_last(monkeypatch, erin):
    order: list[str] = []
    monkeypatch.setattr(changes, "broadcast", lambda group, message: order.append("other processes"))
    handlers = [lambda c: order.append("this process's caches"), lambda c: order.append("live sessions")]
    changes.subscribe(handlers[1], heard=False)
    changes.subscribe(handlers[0])
    try:
        erin.save()
    finally:
        for handler in handlers:
            changes.unsubscribe(handler)
    assert order == ["this process's caches", "other processes", "live sessions"]


def test_one_failing_subscriber_does_not_keep_the_others_from_hearing(heard, erin):
    def broken(change: Change) -> None:
        raise RuntimeError("boom")

    changes.subscribe(broken)
    try:
        heard.clear()
        erin.save()
    finally:
        changes.unsubscribe(broken)
    assert heard.committed == [SubjectChanged(erin.pk, "user changed")]


EVENTS = [
    SubjectChanged(7, "account locked: lost laptop", "adam"),
    SubjectChanged(None, "group changed"),
    SessionChanged("ab" * 32, 7, ended=True),
    SessionChanged("cd" * 32),
    CatalogChanged(frozenset({1, 2}), frozenset({3}), "resource changed"),
    CatalogChanged(None, why="network zones changed"),
]


def test_every_event_travels_between_processes_unchanged():
    assert changes.decode(changes.encode(EVENTS)) == EVENTS


def test_another_processs_change_reaches_the_subscribers_that_keep_state_here(heard):
    changes.deliver({**changes.encode(EVENTS), "origin": "another process"})
    assert heard.committed == EVENTS
    assert heard.pushed == []  # that process pushed to the live sessions itself


def test_this_processs_own_message_and_garbage_are_not_acted_on(heard):
    changes.deliver(changes.encode(EVENTS))  # heard back from the group: already delivered
    changes.deliver({"type": "admission.drop", "user": 7})
    changes.deliver({"type": changes.MESSAGE_TYPE, "origin": "x", "changes": [{"kind": "nonsense"}]})
    assert heard.committed == []
