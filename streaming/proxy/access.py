"""The proxy's admission: who is asking, for which resource, and what the decision says.

This is the only module that calls :mod:`tiers`. It runs synchronously (database work) in
one thread hop per request and returns an :class:`Admission` the ASGI side turns into a
response or a forwarded request. No policy ``if`` lives here: the outcome comes from
:func:`tiers.enforcement.authorize`; this module only translates it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import SimpleNamespace
from typing import Any, NamedTuple
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user, get_user_model
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.shortcuts import resolve_url
from django.utils.crypto import constant_time_compare
from django.utils.module_loading import import_string
from django_otp.middleware import OTPMiddleware

from portal.accounts.mfa import AMR_KEY, DEFAULT_AMR, MFA_TIME_KEY
from portal.audit.chain import record
from streaming.proxy import pending
from streaming.proxy.admission_cache import admission_cache
from streaming.proxy.assertion import Identity, KeyRing, assertion_claims, sign_assertion
from streaming.proxy.ratelimit import limiter
from tiers.context import (
    CompiledRule,
    classify_compiled,
    compile_action_rules,
    needs_lookups,
    resolve_zone_in_memory,
    resource_info,
    user_groups,
    zone_table,
)
from tiers.enforcement import authorize, classify, decide_in_memory, load_resource, step_up_url
from tiers.models import ActionRule, NetworkZone, Resource, Tier
from tiers.types import Action, Decision, DecisionInput, DeviceInfo, Outcome, Reason, ResourceInfo, Subject

__all__ = ["Admission", "GateRequest", "Verdict", "admit", "admit_from_memory", "hold_for_step_up", "keyring"]

_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_OTP = OTPMiddleware(lambda request: None)  # its device check, without the middleware chain
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
    hold_body: bool = False
    # (bucket key, rate per minute): a token the caller still has to take (answers from memory)
    bucket: tuple[str, int] | None = None
    # isolated browsers only: the tier's file-transfer control for what the app sends as a download
    downloads: str = ""
    # what hold_for_step_up needs to bind the held request to the same decision
    context: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


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


catalog_cache = _CatalogCache()
for _model in (Resource, Tier, ActionRule, NetworkZone):
    post_save.connect(catalog_cache.clear, sender=_model, dispatch_uid=f"proxy-catalog-{_model.__name__}")
    post_delete.connect(catalog_cache.clear, sender=_model, dispatch_uid=f"proxy-catalog-d-{_model.__name__}")
m2m_changed.connect(catalog_cache.clear, dispatch_uid="proxy-catalog-m2m")
admission_cache.on_catalog_change(catalog_cache.clear)
admission_cache.on_catalog_change(zone_table.clear)


def _session(session_key: str | None) -> Any:
    engine = import_string(f"{settings.SESSION_ENGINE}.SessionStore")
    return engine(session_key)


def _session_user(session: Any) -> tuple[Any | None, bool]:
    """(user, second factor verified). A locked (inactive) user comes back unverified-but-known
    so the decision can deny them with its reason instead of a bare sign-in page."""
    holder = SimpleNamespace(session=session)
    user = get_user(holder)
    if user.is_authenticated:
        _OTP._verify_user_sync(holder, user)
        return user, user.is_verified()
    user_id = session.get(SESSION_KEY)
    if user_id is None:
        return None, False
    locked = get_user_model()._default_manager.filter(pk=user_id, is_active=False).first()
    if locked is not None and constant_time_compare(session.get(HASH_SESSION_KEY, ""),
                                                    locked.get_session_auth_hash()):
        return locked, False
    return None, False


def _login_url(view: str, next_url: str) -> str:
    return f"{view}?{urlencode({'next': next_url})}"


def _identity(user: Any, session: Any, tier: str, groups: frozenset[str]) -> Identity:
    last_login = getattr(user, "last_login", None)
    mfa_time = session.get(MFA_TIME_KEY)
    return Identity(
        subject=str(user.pk), username=user.get_username(), email=user.email or "",
        groups=tuple(sorted(groups)), tier=tier,
        amr=tuple(session.get(AMR_KEY) or DEFAULT_AMR),
        auth_time=int(last_login.timestamp()) if last_login else None,
        mfa_time=int(mfa_time) if mfa_time is not None else None,
    )


def _audit(kind: str, outcome: str, req: GateRequest, actor: str, decision: Decision | None,
           **detail: Any) -> None:
    record(kind, outcome=outcome, actor=actor, resource=req.slug,
           reasons=decision.reasons_as_data() if decision else [], client_address=req.client_address,
           request_id=req.request_id, detail={"method": req.method, "path": req.path, **detail})


def admit_from_memory(req: GateRequest) -> Admission | None:
    """The allow of a request decided from memory, or None: then :func:`admit` decides it.

    Runs on the event loop, so it never touches the database: the session's facts come from
    the admission cache, the resource and zones from their in-memory tables. The decision is
    the same function with the same inputs, made for this request at this time (MFA age
    included); only an allow is answered here, with its own fresh assertion.
    """
    if req.replay_token is not None:
        return None
    snapshot = admission_cache.get(req.session_key)
    row = catalog_cache.peek(req.slug) if snapshot is not None else None
    if snapshot is None or row is None or row.info is None:
        return None
    resource, info = row.resource, row.info
    if info.kind != "web":
        return None
    action = Action("http", classify_compiled(row.rules, req.method, req.path), req.method, req.path)
    zone = resolve_zone_in_memory(req.client_address)
    if zone is None or needs_lookups(info.tier, action.action_class):
        return None
    now = time.time()
    identity = snapshot.identity
    subject = Subject(username=identity.username, groups=snapshot.groups, is_active=True,
                      mfa_age=None if snapshot.mfa_time is None else max(0.0, now - snapshot.mfa_time))
    decision = decide_in_memory(DecisionInput(subject=subject, device=_NO_DEVICE, zone=zone,
                                              resource=info, action=action, now=now,
                                              via_isolation=req.via_isolation))
    if decision.outcome is not Outcome.ALLOW:
        return None
    claims = assertion_claims(identity, issuer=req.issuer, audience=resource.slug, now=now,
                              lifetime=settings.PORTAL_ASSERTION_LIFETIME, tier=info.tier.name)
    rate = decision.obligations.get("rate_limit_per_minute")
    return Admission(Verdict.ALLOW, actor=identity.username, user_id=snapshot.user_id,
                     upstream=resource.upstream,
                     assertion=sign_assertion(keyring().active(), claims), resource_name=resource.name,
                     bucket=(f"{snapshot.user_id}:{resource.slug}", int(rate)) if rate else None,
                     downloads=_downloads(req, decision))


def admit(req: GateRequest) -> Admission:
    """Decide one request to ``/apps/<slug>/...`` before any byte of it reaches the app."""
    ticket = admission_cache.ticket()  # before reading anything: see AdmissionCache.put
    session = _session(req.session_key)
    user, verified = _session_user(session)
    if user is None:
        return Admission(Verdict.LOGIN, location=_login_url(resolve_url(settings.LOGIN_URL), req.portal_path))
    actor = user.get_username()
    if user.is_active and not verified:
        return Admission(Verdict.MFA, actor=actor,
                         location=_login_url("/accounts/mfa/verify/", req.portal_path))
    resource = catalog_cache.get(req.slug)
    if resource is None or resource.kind != "web":
        return Admission(Verdict.NOT_FOUND, actor=actor)

    method, path, held = req.method, req.path, None
    if req.replay_token is not None:
        held = pending.peek(req.replay_token, user_id=user.pk, slug=req.slug)
        if held is None:
            return Admission(Verdict.GONE, actor=actor, resource_name=resource.name)
        method, path = held.method, held.path
    action = Action("http", classify(resource, method, path), method, path)
    groups = user_groups(user)  # read once: for the decision and for the assertion
    decision = authorize(user, session, req.client_address, resource, action,
                         request_id=req.request_id, audit_allows=False, groups=groups,
                         via_isolation=req.via_isolation)

    if decision.outcome is Outcome.STEP_UP:
        if method in _SAFE or held is not None:
            location = step_up_url(user, session, resource, action, decision, req.portal_path)
            return Admission(Verdict.STEP_UP, actor=actor, location=location,
                             reasons=decision.reasons, resource_name=resource.name)
        return Admission(Verdict.STEP_UP, actor=actor, reasons=decision.reasons,
                         resource_name=resource.name, hold_body=True,
                         context={"user": user, "session": session, "resource": resource,
                                  "action": action, "decision": decision})
    if decision.outcome is not Outcome.ALLOW:
        verdict = Verdict.ISOLATE if decision.outcome is Outcome.ISOLATE else Verdict.DENY
        return Admission(verdict, actor=actor, reasons=decision.reasons, resource_name=resource.name)

    rate = decision.obligations.get("rate_limit_per_minute")
    if rate and not req.live_recheck:
        wait = limiter().take(f"{user.pk}:{resource.slug}", int(rate))
        if wait:
            _audit("proxy.rate_limited", "rate_limited", req, actor, None,
                   limit_per_minute=rate, retry_after=wait)
            return Admission(Verdict.RATE_LIMITED, actor=actor, retry_after=wait,
                             resource_name=resource.name)
    if held is not None and not pending.take(req.replay_token or ""):
        return Admission(Verdict.GONE, actor=actor, resource_name=resource.name)
    if held is not None:
        _audit("proxy.replay", "allow", req, actor, None, replayed_method=held.method,
               replayed_path=held.path)

    tier = resource.tier.name
    identity = _identity(user, session, tier, groups)
    if held is None and req.session_key:
        mfa_time = session.get(MFA_TIME_KEY)
        admission_cache.put(req.session_key, ticket, user_id=user.pk, identity=replace(identity, tier=""),
                            groups=groups, mfa_time=float(mfa_time) if mfa_time is not None else None)
    claims = assertion_claims(identity, issuer=req.issuer,
                              audience=resource.slug, now=time.time(),
                              lifetime=settings.PORTAL_ASSERTION_LIFETIME)
    return Admission(Verdict.ALLOW, actor=actor, user_id=user.pk, upstream=resource.upstream,
                     assertion=sign_assertion(keyring().active(), claims), held=held,
                     resource_name=resource.name, downloads=_downloads(req, decision))


def _downloads(req: GateRequest, decision: Decision) -> str:
    """An isolated browser's file downloads follow the tier's file-transfer control."""
    return str(decision.obligations.get("file_transfer", "deny")) if req.via_isolation else ""


def hold_for_step_up(req: GateRequest, admission: Admission, held: pending.HeldRequest) -> str:
    """Keep a form post for after the step-up; return where to send the browser."""
    ctx = admission.context
    token = pending.hold(held, user_id=ctx["user"].pk, slug=req.slug)
    replay = f"/apps/{req.slug}{pending.REPLAY_PREFIX}{token}"
    return step_up_url(ctx["user"], ctx["session"], ctx["resource"], ctx["action"],
                       ctx["decision"], replay)
