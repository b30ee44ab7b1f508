"""The proxy's admission: who is asking, for which resource, and what the decision says.

The full admission (:func:`admit`) runs synchronously (database work) in one thread hop per
request; a repeat request of a known session is decided on the event loop
(:func:`admit_from_memory`). Both read the session's facts through
:class:`streaming.proxy.facts.FactSource` and return an :class:`Admission` the ASGI side
turns into a response or a forwarded request. No policy ``if`` lives here: the outcome comes
from :func:`tiers.decision.decide` (through :func:`tiers.enforcement.authorize` on the full
path); this module only translates it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple
from urllib.parse import urlencode

from django.conf import settings
from django.shortcuts import resolve_url

from portal.audit.chain import record
from streaming.proxy import pending
from streaming.proxy.admission_cache import admission_cache
from streaming.proxy.assertion import KeyRing, assertion_claims, sign_assertion
from streaming.proxy.facts import Facts, RememberedFacts, StoredFacts
from streaming.proxy.ratelimit import limiter
from tiers.context import (
    CompiledRule,
    classify_compiled,
    compile_action_rules,
    needs_lookups,
    resolve_zone_in_memory,
    resource_info,
)
from tiers.enforcement import authorize, classify, decide_in_memory, load_resource, step_up_url
from tiers.models import Resource
from tiers.types import Action, Decision, DecisionInput, DeviceInfo, Outcome, Reason, ResourceInfo

__all__ = ["Admission", "GateRequest", "Verdict", "admit", "admit_from_memory", "catalog_cache", "keyring"]

_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_remembered = RememberedFacts(admission_cache)
_keyring: KeyRing | None = None
_NO_DEVICE = DeviceInfo()  # the proxy knows no device; frozen, so one instance serves all


def keyring() -> KeyRing:
    """The process's signing keys (one reader per process, reloads on rotation)."""
    global _keyring
    directory = settings.PORTAL_ASSERTION_KEYS_DIR
    if _keyring is None or str(_keyring.directory) != str(directory):
        _keyring = KeyRing(directory)
    return _keyring


class Verdict(StrEnum):
    ALLOW = "allow"
    LOGIN = "login"
    MFA = "mfa"
    STEP_UP = "step_up"
    DENY = "deny"
    ISOLATE = "isolate"
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    GONE = "gone"


@dataclass(frozen=True)
class GateRequest:
    """What the ASGI side knows before any body byte is read."""

    slug: str
    method: str
    path: str  # decoded, normalised: what action rules match
    portal_path: str  # /apps/<slug>/...?query, to come back to
    session_key: str | None
    client_address: str
    request_id: str
    issuer: str
    replay_token: str | None = None
    # A re-check of an open WebSocket: the rate limit was counted when it opened.
    live_recheck: bool = False
    # From the user's own isolated browser (its app session says so; streaming.isolation).
    via_isolation: bool = False


@dataclass(frozen=True)
class Admission:
    """The answer for one request, ready to turn into a response."""

    verdict: Verdict
    actor: str = ""
    user_id: int | None = None
    location: str = ""
    reasons: tuple[Reason, ...] = ()
    resource_name: str = ""
    retry_after: int = 0
    upstream: str = ""
    assertion: str = ""
    held: pending.HeldRequest | None = None
    # (bucket key, rate per minute): a token the caller still has to take (answers from memory)
    bucket: tuple[str, int] | None = None
    # isolated browsers only: the tier's file-transfer control for what the app sends as a download
    downloads: str = ""
    # a post that waits for a step-up: what binds its held body to that step-up
    step_up: pending.StepUpTicket | None = field(default=None, repr=False, compare=False)


class _CatalogRow(NamedTuple):
    """One cached resource. A catalog change replaces the whole row, rules included."""

    loaded: float
    resource: Any
    info: ResourceInfo | None
    rules: tuple[CompiledRule, ...]


class _CatalogCache:
    """Resources as :func:`load_resource` returns them (with their decision view and their
    action rules ready to match), kept ``ttl`` seconds per process.

    Catalog rows change rarely and the same resource is read on every request. A change in
    any process clears every process's copy at once (pushed through the admission cache's
    group); ``ttl`` bounds a lost message.
    """

    def __init__(self) -> None:
        self._rows: dict[str, _CatalogRow] = {}
        self._generation = 0  # bumped by every clear: a row read before a change is not kept

    def get(self, slug: str) -> Any:
        hit = self.peek(slug)
        if hit is not None:
            return hit.resource
        generation = self._generation
        resource = load_resource(slug)
        if settings.PORTAL_PROXY_CATALOG_CACHE_SECONDS > 0:
            info = resource_info(resource) if resource is not None else None
            rules = compile_action_rules(resource) if resource is not None else ()
            if generation == self._generation:
                self._rows[slug] = _CatalogRow(time.monotonic(), resource, info, rules)
        return resource

    def peek(self, slug: str) -> _CatalogRow | None:
        """The row (resource, its decision view, its compiled rules) if fresh in memory, else
        None; never reads the database."""
        hit = self._rows.get(slug)
        if hit is None or time.monotonic() - hit.loaded >= settings.PORTAL_PROXY_CATALOG_CACHE_SECONDS:
            return None
        return hit

    def clear(self, **kwargs: Any) -> None:
        self._generation += 1
        self._rows = {}


catalog_cache = _CatalogCache()  # forgets on every catalog change: streaming/proxy/signals.py


def _login_url(view: str, next_url: str) -> str:
    return f"{view}?{urlencode({'next': next_url})}"


def _audit(kind: str, outcome: str, req: GateRequest, actor: str, **detail: Any) -> None:
    record(kind, outcome=outcome, actor=actor, resource=req.slug, reasons=[],
           client_address=req.client_address, request_id=req.request_id,
           detail={"method": req.method, "path": req.path, **detail})


def admit_from_memory(req: GateRequest) -> Admission | None:
    """The allow of a request decided from memory, or None: then :func:`admit` decides it.

    Runs on the event loop, so it never touches the database: the session's facts come from
    the admission cache, the resource and zones from their in-memory tables. The decision is
    the same function with the same inputs, made for this request at this time (MFA age
    included); only an allow is answered here, with its own fresh assertion.
    """
    if req.replay_token is not None:
        return None
    facts = _remembered.facts(req.session_key)
    row = catalog_cache.peek(req.slug) if facts is not None else None
    if facts is None or row is None or row.info is None or row.info.kind != "web":
        return None
    info = row.info
    action = Action("http", classify_compiled(row.rules, req.method, req.path), req.method, req.path)
    zone = resolve_zone_in_memory(req.client_address)
    if zone is None or needs_lookups(info.tier, action.action_class):
        return None
    now = time.time()
    decision = decide_in_memory(DecisionInput(subject=facts.subject(now), device=_NO_DEVICE, zone=zone,
                                              resource=info, action=action, now=now,
                                              via_isolation=req.via_isolation))
    if decision.outcome is not Outcome.ALLOW:
        return None
    rate = decision.obligations.get("rate_limit_per_minute")
    bucket = (f"{facts.user_id}:{row.resource.slug}", int(rate)) if rate else None
    return _allow(req, facts, row.resource, decision, bucket=bucket)


def admit(req: GateRequest) -> Admission:
    """Decide one request to ``/apps/<slug>/...`` before any byte of it reaches the app."""
    ticket = admission_cache.ticket()  # before reading anything: see AdmissionCache.put
    stored = StoredFacts()
    facts = stored.facts(req.session_key)
    if facts is None:
        return Admission(Verdict.LOGIN, location=_login_url(resolve_url(settings.LOGIN_URL), req.portal_path))
    actor = facts.identity.username
    if facts.is_active and not facts.verified:
        return Admission(Verdict.MFA, actor=actor,
                         location=_login_url("/accounts/mfa/verify/", req.portal_path))
    resource = catalog_cache.get(req.slug)
    if resource is None or resource.kind != "web":
        return Admission(Verdict.NOT_FOUND, actor=actor)
    held = None
    if req.replay_token is not None:
        held = pending.peek(req.replay_token, user_id=facts.user_id, slug=req.slug)
        if held is None:
            return Admission(Verdict.GONE, actor=actor, resource_name=resource.name)
    action = _action(resource, req, held)
    decision = authorize(stored.user, stored.session, req.client_address, resource, action,
                         request_id=req.request_id, audit_allows=False, groups=facts.groups,
                         via_isolation=req.via_isolation)
    if decision.outcome is not Outcome.ALLOW:
        return _refused(req, stored, resource, action, decision, held=held)
    refused = _take_rate(req, facts, resource, decision)
    if refused is not None:
        return refused
    if held is not None and not _claim(req, held, actor):
        return Admission(Verdict.GONE, actor=actor, resource_name=resource.name)
    if held is None and req.session_key:
        admission_cache.put(req.session_key, ticket, user_id=facts.user_id, identity=facts.identity,
                            groups=facts.groups, mfa_time=facts.mfa_time)
    return _allow(req, facts, resource, decision, held=held)


def _action(resource: Resource, req: GateRequest, held: pending.HeldRequest | None) -> Action:
    """The action decided: the request's own, or the held post's it replays (bound to its
    digest, so only a grant confirmed for this very post counts)."""
    if held is None:
        return Action("http", classify(resource, req.method, req.path), req.method, req.path)
    return Action("http", classify(resource, held.method, held.path), held.method, held.path,
                  digest=held.digest)


def _refused(req: GateRequest, stored: StoredFacts, resource: Resource, action: Action,
             decision: Decision, *, held: pending.HeldRequest | None) -> Admission:
    """Anything but an allow. A post that needs a step-up is held (its body is read by the
    caller, then :func:`pending.hold_for_step_up` binds it to the step-up)."""
    actor = stored.user.get_username() if stored.user is not None else ""
    if decision.outcome is Outcome.STEP_UP:
        if req.method in _SAFE or held is not None:
            location = step_up_url(stored.user, stored.session, resource, action, decision, req.portal_path)
            return Admission(Verdict.STEP_UP, actor=actor, location=location,
                             reasons=decision.reasons, resource_name=resource.name)
        ticket = pending.StepUpTicket(stored.user, stored.session, resource, action, decision)
        return Admission(Verdict.STEP_UP, actor=actor, reasons=decision.reasons,
                         resource_name=resource.name, step_up=ticket)
    verdict = Verdict.ISOLATE if decision.outcome is Outcome.ISOLATE else Verdict.DENY
    return Admission(verdict, actor=actor, reasons=decision.reasons, resource_name=resource.name)


def _take_rate(req: GateRequest, facts: Facts, resource: Resource, decision: Decision) -> Admission | None:
    """A 429 when the tier's rate limit is used up (a live socket's re-check takes no token)."""
    rate = decision.obligations.get("rate_limit_per_minute")
    if not rate or req.live_recheck:
        return None
    wait = limiter().take(f"{facts.user_id}:{resource.slug}", int(rate))
    if not wait:
        return None
    actor = facts.identity.username
    _audit("proxy.rate_limited", "rate_limited", req, actor, limit_per_minute=rate, retry_after=wait)
    return Admission(Verdict.RATE_LIMITED, actor=actor, retry_after=wait, resource_name=resource.name)


def _claim(req: GateRequest, held: pending.HeldRequest, actor: str) -> bool:
    """Take the held post for this replay: True for exactly one caller, and audited."""
    if not pending.take(req.replay_token or ""):
        return False
    _audit("proxy.replay", "allow", req, actor, replayed_method=held.method, replayed_path=held.path)
    return True


def _allow(req: GateRequest, facts: Facts, resource: Resource, decision: Decision, *,
           held: pending.HeldRequest | None = None, bucket: tuple[str, int] | None = None) -> Admission:
    """An allow with its fresh assertion (both paths mint it the same way)."""
    claims = assertion_claims(facts.identity, issuer=req.issuer, audience=resource.slug, now=time.time(),
                              lifetime=settings.PORTAL_ASSERTION_LIFETIME, tier=resource.tier.name)
    return Admission(Verdict.ALLOW, actor=facts.identity.username, user_id=facts.user_id,
                     upstream=resource.upstream, assertion=sign_assertion(keyring().active(), claims),
                     held=held, resource_name=resource.name, bucket=bucket,
                     downloads=_downloads(req, decision))


def _downloads(req: GateRequest, decision: Decision) -> str:
    """An isolated browser's file downloads follow the tier's file-transfer control."""
    return str(decision.obligations.get("file_transfer", "deny")) if req.via_isolation else ""
