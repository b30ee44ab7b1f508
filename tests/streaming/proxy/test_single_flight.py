"""A burst of one session's requests after its snapshot left memory costs one full admission.

Every connection of a browser misses at the same moment when the session's snapshot (or the
catalog row, or the zone table) expires. The proxy lets the first run the full admission and
decides the others from the memory it refilled; what memory cannot answer (a post that needs
a step-up, another user's session) still gets a full admission of its own.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from channels.db import database_sync_to_async
from django.db import connection

from streaming.proxy import access
from streaming.proxy.access import GateRequest, Verdict
from streaming.proxy.admission_cache import admission_cache
from streaming.proxy.app import ProxyApp
from tests.factories import UserFactory, enrol_totp
from tests.streaming.proxy.conftest import session_cookie_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def listening():
    admission_cache._heard = True
    yield admission_cache
    admission_cache.drop_all()


@pytest.fixture
def counted_app(monkeypatch):
    """A proxy app whose full admissions are counted (and slowed a little, as under load)."""
    calls: list[GateRequest] = []
    lock = threading.Lock()
    real = access.admit

    def admit(req: GateRequest):
        with lock:
            calls.append(req)
        threading.Event().wait(0.05)
        try:
            return real(req)
        finally:
            connection.close()  # the loop's worker threads end with the test: give it back to the pool

    app = ProxyApp()
    app._gate = database_sync_to_async(admit, thread_sensitive=False)
    return app, calls


def _gate(session_key: str, *, method: str = "GET", path: str = "/") -> GateRequest:
    return GateRequest(slug="echo", method=method, path=path, portal_path=f"/apps/echo{path}",
                       session_key=session_key, client_address="127.0.0.1", request_id="t",
                       issuer="https://portal.test")


async def _burst(app: ProxyApp, requests: list[GateRequest]) -> list[access.Admission]:
    return list(await asyncio.gather(*(app._admit_fully(r) for r in requests)))


def test_sixteen_connections_of_one_session_cost_one_full_admission(
        worker, web_resource, echo_upstream, listening, counted_app):
    web_resource("echo", echo_upstream.url)
    app, calls = counted_app
    key = session_cookie_for(worker)
    admission_cache.drop_all()

    answers = asyncio.run(_burst(app, [_gate(key, path=f"/page/{n}") for n in range(16)]))

    assert [a.verdict for a in answers] == [Verdict.ALLOW] * 16
    assert len(calls) == 1
    assert len({a.assertion for a in answers}) == 16  # each request its own assertion


def test_what_memory_cannot_answer_still_gets_its_own_full_admission(
        worker, web_resource, echo_upstream, listening, counted_app):
    web_resource("echo", echo_upstream.url, mfa_write=0)  # every write asks for a fresh code
    app, calls = counted_app
    key = session_cookie_for(worker)
    admission_cache.drop_all()

    answers = asyncio.run(_burst(app, [_gate(key), _gate(key, method="POST"), _gate(key, method="POST")]))

    assert [a.verdict for a in answers] == [Verdict.ALLOW, Verdict.STEP_UP, Verdict.STEP_UP]
    assert len(calls) == 3


def test_one_sessions_admission_never_stands_in_for_another_session(
        worker, web_resource, echo_upstream, listening, counted_app):
    web_resource("echo", echo_upstream.url)
    app, calls = counted_app
    stranger = UserFactory(username="sid", role="auditor")  # not in the app's groups
    stranger.totp = enrol_totp(stranger)
    mine, theirs = session_cookie_for(worker), session_cookie_for(stranger)
    admission_cache.drop_all()

    answers = asyncio.run(_burst(app, [_gate(mine), _gate(theirs), _gate(mine)]))

    assert [a.verdict for a in answers] == [Verdict.ALLOW, Verdict.DENY, Verdict.ALLOW]
    assert [a.actor for a in answers] == ["wendy", "sid", "wendy"]
    assert len(calls) == 2
