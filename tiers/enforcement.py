"""What every enforcement point calls: gather, decide, keep the promises, write it down.

The proxy, the desktop broker and the admin's tools call :func:`authorize`; none of them
holds a policy ``if`` of its own (STYLE.md, convention 2).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from portal.audit.chain import record
from portal.metrics import DECISION_SECONDS, DECISIONS
from tiers.context import CHALLENGE_TTL_SECONDS, classify, gather, session_hash
from tiers.decision import decide
from tiers.models import ActionChallenge, Resource
from tiers.types import Action, Decision, DecisionInput, DeviceInfo, Outcome, Reason

__all__ = ["authorize", "classify", "decide_in_memory", "load_resource", "step_up_url", "verify_challenge"]


_decision_counters: dict[tuple[str, str, str], Any] = {}


def _count_decision(outcome: str, tier: str, action: str) -> None:
    """``DECISIONS`` + 1 for these labels; the labelled child is looked up once per label set
    (``labels()`` validates and locks on every call, too slow for each proxied request).
    Nothing removes ``DECISIONS`` children, so a kept child is the one ``labels()`` returns."""
    key = (outcome, tier, action)
    child = _decision_counters.get(key)
    if child is None:
        child = _decision_counters[key] = DECISIONS.labels(outcome=outcome, tier=tier, action=action)
    child.inc()


def load_resource(slug: str) -> Resource | None:
    """A resource with everything the decision reads, in as few queries as possible."""
    return (Resource.objects.select_related("tier")
            .prefetch_related("tier__allowed_zones", "allowed_groups", "allowed_users", "action_rules")
            .filter(slug=slug).first())


def _consume_one_time_mfa(user: AbstractBaseUser, session_key: str | None, resource: Resource,
                          action: Action) -> bool:
    since = timezone.now() - timezone.timedelta(seconds=CHALLENGE_TTL_SECONDS)
    with transaction.atomic():
        challenge = (ActionChallenge.objects.select_for_update()
                     .filter(user=user, session_hash=session_hash(session_key), resource=resource,
                             method=action.method or action.kind, path=action.path,
                             digest=action.digest, verified_at__gte=since, consumed_at__isnull=True)
                     .order_by("verified_at").first())
        if challenge is None:
            return False
        challenge.consumed_at = timezone.now()
        challenge.save(update_fields=["consumed_at"])
    return True


def authorize(user: AbstractBaseUser, session: Any, client_address: str, resource: Resource,
              action: Action, *, request_id: str = "", device: DeviceInfo | None = None,
              audit_allows: bool = True, groups: frozenset[str] | None = None,
              via_isolation: bool = False) -> Decision:
    """Decide ``action``; consume a one-time MFA grant it relies on; audit the decision.

    ``audit_allows=False`` lets a high-volume enforcement point (the proxy) keep allows in its
    own access records; denials and step-ups always go to the audit chain.
    """
    started = time.perf_counter()
    inp = gather(user, session, client_address, resource, action, device=device, groups=groups,
                 via_isolation=via_isolation)
    decision = decide(inp)
    if decision.consumed_one_time_mfa and not _consume_one_time_mfa(
            user, getattr(session, "session_key", None), resource, action):
        # Someone used the grant between gathering and now: it was one-time.
        decision = Decision(Outcome.STEP_UP, (Reason(
            "mfa_per_action", "This action needs a fresh code for this action alone.",
            {"action_class": str(action.action_class), "freshness": 0},
            "Enter a code from your authenticator app."),))
    DECISION_SECONDS.observe(time.perf_counter() - started)
    _count_decision(str(decision.outcome), inp.resource.tier.name, action.kind)
    if audit_allows or not decision.allowed:
        record("decision", outcome=str(decision.outcome), actor=user.get_username(),
               resource=resource.slug, reasons=decision.reasons_as_data(),
               client_address=client_address, zone=inp.zone.name, device=inp.device.id,
               request_id=request_id,
               detail={"action": action.kind, "class": str(action.action_class),
                       "method": action.method, "path": action.path, "tier": inp.resource.tier.name})
    return decision


def decide_in_memory(inp: DecisionInput) -> Decision:
    """:func:`tiers.decision.decide` with the metrics, for an enforcement point that gathered
    ``inp`` from its own memory (the proxy's admission cache). It must not need look-ups
    (:func:`tiers.context.needs_lookups`), and any outcome but an allow must be decided
    again through :func:`authorize`, which audits it."""
    started = time.perf_counter()
    decision = decide(inp)
    if decision.allowed:  # anything else is counted when authorize() decides it again
        DECISION_SECONDS.observe(time.perf_counter() - started)
        _count_decision(str(decision.outcome), inp.resource.tier.name, inp.action.kind)
    return decision


def step_up_url(user: AbstractBaseUser, session: Any, resource: Resource, action: Action,
                decision: Decision, next_url: str) -> str:
    """Where to send a user whose decision was ``step_up``; binds a one-time grant if needed."""
    params = {"next": next_url, "reason": decision.reasons[0].message if decision.reasons else ""}
    if any(r.rule == "mfa_per_action" for r in decision.reasons):
        challenge = ActionChallenge.objects.create(
            user=user, session_hash=session_hash(getattr(session, "session_key", None)),
            resource=resource, method=action.method or action.kind, path=action.path,
            digest=action.digest)
        params["challenge"] = str(challenge.pk)
    return f"/accounts/step-up/?{urlencode(params)}"


def verify_challenge(user: AbstractBaseUser, session_key: str | None, old_session_key: str | None,
                     challenge_id: str | None) -> bool:
    """After a successful step-up, arm the one-time grant it was asked for (if any).

    The step-up rotates the session key, so the challenge moves from the old key to the new one.
    """
    if not challenge_id or not str(challenge_id).isdigit():
        return False
    since = timezone.now() - timezone.timedelta(seconds=CHALLENGE_TTL_SECONDS)
    return bool(ActionChallenge.objects.filter(
        pk=int(challenge_id), user=user, session_hash=session_hash(old_session_key),
        verified_at__isnull=True, consumed_at__isnull=True, created_at__gte=since,
    ).update(verified_at=timezone.now(), session_hash=session_hash(session_key)))
