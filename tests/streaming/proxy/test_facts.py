"""Who is asking: the facts of a session, read from the database or from memory, agree.

The second factor is checked as django-otp's middleware checks it, through its public API
(the device the session names must be confirmed and the user's own).
"""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from django_otp import DEVICE_ID_SESSION_KEY

from portal.accounts.mfa import AMR_KEY, MFA_TIME_KEY
from streaming.proxy.admission_cache import AdmissionCache
from streaming.proxy.facts import RememberedFacts, StoredFacts
from tests.factories import UserFactory, enrol_totp

pytestmark = pytest.mark.django_db


def _signed_in(user, device=None, *, amr=("pwd", "hwk")) -> str:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    if device is not None:
        session[DEVICE_ID_SESSION_KEY] = device.persistent_id
        session[MFA_TIME_KEY] = int(time.time()) - 30
        session[AMR_KEY] = list(amr)
    session.save()
    return session.session_key


def test_a_session_confirmed_with_the_users_own_device_is_verified():
    user = UserFactory(username="vera", role="employee")
    facts = StoredFacts().facts(_signed_in(user, enrol_totp(user)))
    assert facts is not None and facts.verified and facts.is_active


def test_a_session_naming_someone_elses_device_is_not_verified():
    user, other = UserFactory(username="ursula", role="employee"), UserFactory(username="otto", role="employee")
    facts = StoredFacts().facts(_signed_in(user, enrol_totp(other)))
    assert facts is not None and not facts.verified


def test_a_session_naming_an_unconfirmed_device_is_not_verified():
    user = UserFactory(username="una", role="employee")
    device = enrol_totp(user)
    device.confirmed = False
    device.save()
    facts = StoredFacts().facts(_signed_in(user, device))
    assert facts is not None and not facts.verified


def test_nobody_signed_in_has_no_facts():
    assert StoredFacts().facts(None) is None
    assert StoredFacts().facts("no-such-session") is None


def test_facts_kept_in_memory_give_the_decision_the_same_subject_as_the_database():
    """The passkey a session was confirmed with counts the same whether the request is decided
    from memory or the full way (memory used to leave the factor out)."""
    cache = AdmissionCache()
    cache._heard = True
    user = UserFactory(username="mia", role="employee")
    user.groups.create(name="finance")
    key = _signed_in(user, enrol_totp(user))
    stored = StoredFacts().facts(key)
    assert stored is not None
    assert cache.put(key, cache.ticket(), user_id=stored.user_id, identity=stored.identity,
                     groups=stored.groups, mfa_time=stored.mfa_time)
    remembered = RememberedFacts(cache).facts(key)
    now = time.time()
    assert remembered is not None
    assert remembered.subject(now) == stored.subject(now)
    assert remembered.subject(now).mfa_factor == "passkey"
