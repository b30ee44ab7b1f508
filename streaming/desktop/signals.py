"""Revocation is pushed: a policy change a live session depends on wakes its consumer at once.

The desktop hears the policy change bus (tiers.changes) and pushes a re-check to the
channel-layer groups of the sessions a change concerns: the person's, the resource's, the
tier's. The consumer then decides again (the decision, not this module, says whether the
change ends the session, holds it for a fresh code, or lets it go on). The periodic
re-check is the safety net, not the mechanism.

The bus calls :func:`recheck` after commit (the consumer must read the new state) and only in
the process that made the change: a group push reaches live sessions in every process.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.sessions.models import Session
from django.db.models.signals import post_save
from django.dispatch import receiver

from streaming.desktop import groups, signins
from streaming.desktop.broker import push
from tiers import changes
from tiers.changes import Change, SessionChanged, SubjectChanged
from tiers.models import Tier

__all__ = ["connect", "groups_to_recheck", "recheck"]


def _every_tier() -> list[str]:
    """Every live session is in its tier's group: a change that concerns everyone goes there."""
    return [groups.for_tier(pk) for pk in Tier.objects.values_list("pk", flat=True)]


def groups_to_recheck(change: Change) -> tuple[list[str], str, str]:
    """The groups whose sessions must decide again, the reason, and who made the change."""
    if isinstance(change, SubjectChanged):
        if change.user_id is None:
            return _every_tier(), change.why, change.by
        return [groups.for_user(change.user_id)], change.why, change.by
    if isinstance(change, SessionChanged):
        if change.ended and change.user_id is not None:
            return [groups.for_user(change.user_id)], "session ended", ""
        return [], "", ""  # a saved session (MFA, step-up) takes nothing away
    if change.resource_ids is None:
        return _every_tier(), change.why, ""
    return ([groups.for_resource(pk) for pk in sorted(change.resource_ids)]
            + [groups.for_tier(pk) for pk in sorted(change.tier_ids)]), change.why, ""


def _push_all(names: Iterable[str], why: str, by: str) -> None:
    for name in names:
        push(name, {"type": "desktop.recheck", "why": why, "by": by})


def recheck(change: Change) -> None:
    """Every live session ``change`` concerns decides again now."""
    names, why, by = groups_to_recheck(change)
    _push_all(names, why, by)


def connect() -> None:
    changes.subscribe(recheck, heard=False)


@receiver(post_save, sender=Session)
def _session_saved(sender: Any, instance: Session, **kwargs: Any) -> None:
    """A rotated session key (step-up) carries the sign-in: live desktops follow it there."""
    signins.follow(instance.session_key, instance.get_decoded())
