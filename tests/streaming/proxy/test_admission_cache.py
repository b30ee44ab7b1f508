"""Deciding from memory: repeat requests skip the database, and every change is felt at once.

The proxy keeps a few seconds' snapshot of a verified session after an allow
(streaming/proxy/admission_cache.py). These tests pin down what that may never change: the
next request after a lock, a group removal, a sign-out, a step-up or a re-tag is decided on
the new facts, in this process and — through Redis — in another portal process.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import jwt
import pytest
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext

from streaming.proxy.access import GateRequest, Verdict, admit, admit_from_memory
from streaming.proxy.admission_cache import GROUP, AdmissionCache, admission_cache
from streaming.proxy.assertion import Identity
from tests.conftest import require
from tests.server import run_portal
from tests.streaming.proxy.conftest import session_cookie_for
from tiers import changes

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def echo(web_resource, echo_upstream):
    return web_resource("echo", echo_upstream.url)


@pytest.fixture
def listening():
    """The cache as a running portal has it: hearing the invalidation group."""
    admission_cache._heard = True
    yield admission_cache
    admission_cache.drop_all()


def _gate(session_key: str, *, method: str = "GET", path: str = "/") -> GateRequest:
    return GateRequest(slug="echo", method=method, path=path, portal_path=f"/apps/echo{path}",
                       session_key=session_key, client_address="127.0.0.1", request_id="t",
                       issuer="https://portal.test")


def _allowed_once(session_key: str) -> None:
    assert admit(_gate(session_key)).verdict is Verdict.ALLOW


def test_a_repeat_request_is_decided_without_the_database_and_with_a_fresh_assertion(
        worker, echo, listening):
    key = session_cookie_for(worker)
    _allowed_once(key)
    with CaptureQueriesContext(connection) as queries:
        first, second = admit_from_memory(_gate(key)), admit_from_memory(_gate(key))
    assert len(queries) == 0
    assert first.verdict is second.verdict is Verdict.ALLOW
    one, two = (jwt.decode(a.assertion, options={"verify_signature": False}) for a in (first, second))
    assert one["jti"] != two["jti"]
    assert one["sub"] == str(worker.pk) and one["tier"] == "t-echo" and one["aud"] == "echo"


def test_only_allows_come_from_memory(worker, web_resource, echo_upstream, listening):
    web_resource("echo", echo_upstream.url, mfa_write=0)  # every write asks for a fresh code
    key = session_cookie_for(worker)
    _allowed_once(key)
    assert admit_from_memory(_gate(key)).verdict is Verdict.ALLOW
    assert admit_from_memory(_gate(key, method="POST")) is None
    assert admit(_gate(key, method="POST")).verdict is Verdict.STEP_UP


@pytest.mark.parametrize("change", ["lock", "leave group", "sign out", "delete device", "re-tag"])
def test_a_change_drops_what_memory_knew(worker, echo, listening, change):
    key = session_cookie_for(worker)
    _allowed_once(key)
    assert admit_from_memory(_gate(key)) is not None
    if change == "lock":
        worker.is_active = False
        worker.save()
    elif change == "leave group":
        worker.groups.remove(Group.objects.get(name="employee"))
    elif change == "sign out":
        from django.contrib.sessions.backends.cached_db import SessionStore

        SessionStore(key).delete()  # what signing out does (flush)
    elif change == "delete device":
        worker.totpdevice_set.all().delete()
    else:
        echo.allowed_groups.clear()
    assert admit_from_memory(_gate(key)) is None
    assert admit(_gate(key)).verdict is not Verdict.ALLOW


def test_an_admin_lock_drops_every_snapshot_of_the_user(worker, echo, listening):
    from portal.accounts.lockout import lock_user

    key = session_cookie_for(worker)
    _allowed_once(key)
    identity = Identity(str(worker.pk), "wendy", "", (), "", ("pwd", "otp"), None, None)
    listening.put("a-session-the-database-no-longer-has", listening.ticket(), user_id=worker.pk,
                  identity=identity, groups=frozenset(), mfa_time=None)
    lock_user(worker, by="admin", reason="lost laptop")
    assert admit_from_memory(_gate(key)) is None
    assert listening.get("a-session-the-database-no-longer-has") is None
    assert admit(_gate(key)).verdict is not Verdict.ALLOW


def test_a_step_up_drops_the_old_mfa_time(worker, echo, listening):
    from django.contrib.sessions.backends.cached_db import SessionStore

    from portal.accounts.mfa import MFA_TIME_KEY

    key = session_cookie_for(worker)
    _allowed_once(key)
    session = SessionStore(key)
    session[MFA_TIME_KEY] = int(time.time()) + 1
    session.save()
    assert admit_from_memory(_gate(key)) is None


def test_a_snapshot_read_before_a_change_is_not_kept_after_it():
    cache = AdmissionCache()
    cache._heard = True
    identity = Identity("7", "x", "", (), "", ("pwd", "otp"), None, None)
    ticket = cache.ticket()  # a full admission starts reading ...
    cache.drop_user(7)  # ... a lock of user 7 goes by ...
    assert not cache.put("k", ticket, user_id=7, identity=identity, groups=frozenset(), mfa_time=None)
    assert cache.get("k") is None  # ... and what it read is not remembered
    assert cache.put("k", cache.ticket(), user_id=7, identity=identity, groups=frozenset(), mfa_time=None)
    assert cache.get("k") is not None


def test_snapshots_expire(settings):
    settings.PORTAL_PROXY_ADMISSION_CACHE_SECONDS = 0.05
    cache = AdmissionCache()
    cache._heard = True
    identity = Identity("7", "x", "", (), "", ("pwd", "otp"), None, None)
    cache.put("k", cache.ticket(), user_id=7, identity=identity, groups=frozenset(), mfa_time=None)
    assert cache.get("k") is not None
    time.sleep(0.06)
    assert cache.get("k") is None


def test_memory_follows_the_active_sessions_not_all_of_them(settings):
    settings.PORTAL_PROXY_ADMISSION_CACHE_SECONDS = 0.05
    cache = AdmissionCache()
    cache._heard = True
    identity = Identity("7", "x", "", (), "", ("pwd", "otp"), None, None)
    for i in range(3000):  # sessions that each came once and never again
        cache.put(f"gone-{i}", cache.ticket(), user_id=i, identity=identity, groups=frozenset(),
                  mfa_time=None)
        if i == 1499:
            time.sleep(0.06)  # the first half expires
    assert len(cache) <= 2048
    assert cache.get("gone-2999") is not None


class _BrokenLayer(InMemoryChannelLayer):
    """A channel layer whose group membership fails, as Redis going away would."""

    async def group_add(self, group: str, channel: str) -> None:
        raise ConnectionError("channel layer down")


def test_a_cache_that_cannot_hear_invalidations_is_not_used(monkeypatch):
    cache = AdmissionCache()
    identity = Identity("7", "x", "", (), "", ("pwd", "otp"), None, None)
    monkeypatch.setattr("streaming.proxy.admission_cache.listener_layer", lambda: _BrokenLayer())

    async def run() -> bool:
        cache.ensure_listening()
        await asyncio.sleep(0.05)
        usable = cache.usable()
        await cache.stop_listening()
        return usable

    assert asyncio.run(run()) is False
    assert cache.put("k", cache.ticket(), user_id=7, identity=identity, groups=frozenset(), mfa_time=None)
    assert cache.get("k") is None  # stored or not, nothing is answered from it


def test_an_invalidation_from_another_process_arrives_through_the_channel_layer():
    """Another process's lock, as the policy change bus sends it (tiers.changes), drops the
    person's sessions from this process's memory."""
    cache = admission_cache
    identity = Identity("7", "x", "", (), "", ("pwd", "otp"), None, None)
    from_elsewhere = {**changes.encode([changes.SubjectChanged(7, "account locked")]), "origin": "another"}

    async def run() -> tuple[bool, bool]:
        cache.ensure_listening()
        for _ in range(100):
            if cache.usable():
                break
            await asyncio.sleep(0.01)
        cache.put("k", cache.ticket(), user_id=7, identity=identity, groups=frozenset(), mfa_time=None)
        before = cache.get("k") is not None
        await get_channel_layer().group_send(GROUP, from_elsewhere)
        for _ in range(100):
            if cache.get("k") is None:
                break
            await asyncio.sleep(0.01)
        after = cache.get("k") is None
        await cache.stop_listening()
        return before, after

    try:
        assert asyncio.run(run()) == (True, True)
    finally:
        cache.drop_all()


def test_a_lock_reaches_another_portal_process_within_moments(worker, echo):
    """Two portal processes share Redis: a lock written here ends access through the other
    as soon as the broadcast arrives (milliseconds; a request racing it may still pass, see
    docs/decisions/0011), and nothing passes after that."""
    require(bool(settings.CONFIG.redis_url), "Redis (REDIS_URL) for a second portal process")
    key = session_cookie_for(worker)
    with run_portal() as other, \
            httpx.Client(base_url=other, verify=False, timeout=10, cookies={"sessionid": key}) as client:
        for _ in range(3):  # the first fills the other process's memory, the rest come from it
            assert client.get("/apps/echo/x").status_code == 200
        worker.is_active = False
        worker.save()
        locked_at, statuses = time.monotonic(), []
        while time.monotonic() - locked_at < 1.0 and 403 not in statuses:
            statuses.append(client.get("/apps/echo/x").status_code)
        assert statuses[-1] == 403, statuses
        assert [client.get("/apps/echo/x").status_code for _ in range(3)] == [403, 403, 403]


def test_a_resource_read_before_a_catalog_change_is_not_kept_after_it(echo, monkeypatch):
    from streaming.proxy import access

    real_load = access.load_resource

    def load_while_an_admin_retags(slug):
        row = real_load(slug)
        access.catalog_cache.clear()  # the change's push arrives while the old row is in hand
        return row

    access.catalog_cache.clear()
    monkeypatch.setattr(access, "load_resource", load_while_an_admin_retags)
    assert access.catalog_cache.get("echo").slug == "echo"
    assert access.catalog_cache.peek("echo") is None  # read next time, not served stale
