"""The proxy's decision from memory keeps up with the catalog and mints the same claims."""

from __future__ import annotations

import dataclasses
import re
import time

import jwt
import pytest

from streaming.proxy.access import Admission, GateRequest, Verdict, admit, admit_from_memory, catalog_cache
from streaming.proxy.admission_cache import admission_cache
from streaming.proxy.assertion import Identity, assertion_claims
from tests.streaming.proxy.conftest import session_cookie_for
from tiers.context import zone_table
from tiers.models import ActionRule

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def listening():
    admission_cache._heard = True
    yield admission_cache
    admission_cache.drop_all()


def _gate(session_key: str, path: str) -> GateRequest:
    return GateRequest(slug="echo", method="GET", path=path, portal_path=f"/apps/echo{path}",
                       session_key=session_key, client_address="127.0.0.1", request_id="t",
                       issuer="https://portal.test")


def _admitted_from_memory(session_key: str, path: str) -> Admission | None:
    """:func:`admit_from_memory`'s answer, read while the row, the zone table and the session are in memory.

    All three also leave memory on their own: the zone table after a few seconds, the row and
    the session when a change's broadcast reaches this process (a live portal from another
    test listens in this process, and hears it a moment after the save). Any of these would
    hide what is tested.
    """
    for _ in range(100):
        zone_table.get()
        catalog_cache.get("echo")
        if admission_cache.get(session_key) is None:
            # The sign-in's own invalidations can land after the first admission stored the
            # session: store it again with an allowed request.
            admit(_gate(session_key, "/"))
        admission = admit_from_memory(_gate(session_key, path))
        if (catalog_cache.peek("echo") is not None and zone_table.peek() is not None
                and admission_cache.get(session_key) is not None):
            return admission
        time.sleep(0.01)
    raise AssertionError("the catalog row never stayed in memory")


def _from_memory(session_key: str, path: str) -> Verdict | None:
    admission = _admitted_from_memory(session_key, path)
    return None if admission is None else admission.verdict


def test_a_changed_action_rule_is_seen_by_the_next_request_from_memory(
        worker, web_resource, echo_upstream, listening):
    resource = web_resource("echo", echo_upstream.url)  # sensitive actions need a code each time
    key = session_cookie_for(worker)
    assert admit(_gate(key, "/admin/x")).verdict is Verdict.ALLOW
    assert _from_memory(key, "/admin/x") is Verdict.ALLOW

    rule = ActionRule.objects.create(resource=resource, methods="get", path="/admin/*",
                                     action_class="sensitive")
    assert catalog_cache.peek("echo") is None  # the row, compiled rules and all, was dropped
    assert admit(_gate(key, "/admin/x")).verdict is Verdict.STEP_UP  # re-read, with the rule
    assert _from_memory(key, "/admin/x") is None  # sensitive: decided the full way
    assert _from_memory(key, "/other") is Verdict.ALLOW

    rule.path = "/secret/*"
    rule.save()
    assert catalog_cache.peek("echo") is None
    assert admit(_gate(key, "/other")).verdict is Verdict.ALLOW
    assert _from_memory(key, "/admin/x") is Verdict.ALLOW
    assert _from_memory(key, "/secret/x") is None


def test_claims_from_memory_match_those_of_the_full_admission(worker, web_resource, echo_upstream,
                                                              listening):
    web_resource("echo", echo_upstream.url)
    key = session_cookie_for(worker)
    full = jwt.decode(admit(_gate(key, "/")).assertion, options={"verify_signature": False})
    fast = jwt.decode(_admitted_from_memory(key, "/").assertion, options={"verify_signature": False})
    assert full.keys() == fast.keys()
    for claim in set(full) - {"iat", "nbf", "exp", "jti"}:
        assert fast[claim] == full[claim], claim
    assert fast["tier"] == "t-echo"


def test_a_tier_given_to_assertion_claims_stands_in_for_the_identitys():
    alice = Identity("7", "alice", "a@example.com", ("b", "a"), "", ("pwd", "otp"), 10, 20)
    given = assertion_claims(alice, issuer="i", audience="notes", now=1000.5, lifetime=60, tier="high")
    copied = assertion_claims(dataclasses.replace(alice, tier="high"), issuer="i", audience="notes",
                              now=1000.5, lifetime=60)
    assert list(given) == list(copied)
    assert {**given, "jti": ""} == {**copied, "jti": ""}
    assert re.fullmatch(r"[0-9a-f]{32}", given["jti"]) and given["jti"] != copied["jti"]
    assert assertion_claims(alice, issuer="i", audience="n", now=1.0, lifetime=60)["tier"] == ""


def test_the_proxy_reads_a_changed_setting_on_the_next_request(settings):
    from streaming.proxy.conf import proxy_conf as _conf

    assert _conf().session_cookie == settings.SESSION_COOKIE_NAME
    settings.SESSION_COOKIE_NAME = "portal_session"
    settings.ALLOWED_HOSTS = ["portal.example"]
    conf = _conf()
    assert conf.session_cookie == "portal_session"
    assert conf.portal_cookies[0] == "portal_session"
    assert conf.host_allowed("portal.example:443") and not conf.host_allowed("evil.example")
