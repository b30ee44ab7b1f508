"""The held action a one-time step-up confirms, as one digest a passkey can sign.

A tier with a freshness of 0 asks for a confirmation of one action: the enforcement point
files an :class:`~tiers.models.ActionChallenge` (resource, method, path, this session) and,
for a form post, holds the post (``streaming.proxy.pending``) until the step-up. The digest
covers all of it, the held body included, so the WebAuthn challenge derived from it
(:mod:`portal.passkeys.ceremony`) confirms that action and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from django.contrib.auth.base_user import AbstractBaseUser
from django.utils import timezone

from tiers.context import CHALLENGE_TTL_SECONDS, session_hash
from tiers.models import ActionChallenge

__all__ = ["DesktopAction", "HeldAction", "held_action"]

_REPLAY = re.compile(r"/apps/([a-z0-9][a-z0-9-]{0,62})/\.portal/replay/([A-Za-z0-9_-]{1,64})")


@dataclass(frozen=True)
class HeldAction:
    """What one step-up would release: the challenge, its action, and the held body's digest."""

    challenge_id: int
    resource: str
    method: str
    path: str
    held_method: str
    held_query: str
    body_sha256: str

    @property
    def digest(self) -> str:
        """SHA-256 over the canonical JSON of every field: the binding a passkey signs."""
        fields = {"challenge": self.challenge_id, "resource": self.resource, "method": self.method,
                  "path": self.path, "held_method": self.held_method, "held_query": self.held_query,
                  "body_sha256": self.body_sha256}
        return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class DesktopAction:
    """What an in-session step-up on a live desktop confirms: going on with (or opening a
    clipboard or file stream in) this one session of this user on this resource.

    The desktop's held input lives in the tunnel, not in a request the portal could digest;
    binding the passkey to the session, its owner and the action the tunnel asked for means
    an assertion made in one desktop cannot confirm another, nor any held web action.
    """

    session_id: str
    user_id: int
    resource: str
    action: str  # desktop.continue, clipboard.in, clipboard.out or file.transfer

    @property
    def digest(self) -> str:
        """SHA-256 over the canonical JSON of every field (keys no held web action has)."""
        fields = {"desktop_session": self.session_id, "user": self.user_id, "resource": self.resource,
                  "desktop_action": self.action}
        return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def held_action(user: AbstractBaseUser, session_key: str | None, challenge_id: str | None,
                next_url: str) -> HeldAction | None:
    """The action waiting for ``challenge_id`` in this session, or None when none waits.

    ``next_url`` is where the step-up returns; a held form post is named there by its replay
    token, and its body is read (never taken) to be digested.
    """
    if not challenge_id or not str(challenge_id).isdigit():
        return None
    since = timezone.now() - timezone.timedelta(seconds=CHALLENGE_TTL_SECONDS)
    challenge = (ActionChallenge.objects.select_related("resource")
                 .filter(pk=int(challenge_id), user=user, session_hash=session_hash(session_key),
                         verified_at__isnull=True, consumed_at__isnull=True, created_at__gte=since)
                 .first())
    if challenge is None:
        return None
    held_method = held_query = body_sha256 = ""
    if match := _REPLAY.fullmatch(next_url or ""):
        from streaming.proxy import pending  # the proxy's held posts; read here, never taken

        slug, token = match.groups()
        held = pending.peek(token, user_id=user.pk, slug=slug)
        if held is None or slug != challenge.resource.slug:
            return None
        held_method, held_query = held.method, held.query
        body_sha256 = hashlib.sha256(held.body).hexdigest()
    return HeldAction(challenge.pk, challenge.resource.slug, challenge.method, challenge.path,
                      held_method, held_query, body_sha256)
