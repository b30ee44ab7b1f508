"""Revocation is pushed: changes a live session depends on wake its consumer at once.

The consumer then decides again (the decision, not this module, says whether the change
ends the session). The periodic re-check is the safety net, not the mechanism.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.contrib.sessions.models import Session
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from streaming.desktop import groups, signins
from streaming.desktop.broker import push
from tiers.models import AccessGrant, Resource, Tier

__all__ = ["recheck_resource", "recheck_user"]


def _recheck(group: str, why: str, by: str = "") -> None:
    # After commit: the consumer must read the new state, not the old one.
    transaction.on_commit(lambda: push(group, {"type": "desktop.recheck", "why": why, "by": by}))


def recheck_user(user_id: int, why: str, by: str = "") -> None:
    """Every live session of this user decides again now (e.g. after a lock, by ``by``)."""
    _recheck(groups.for_user(user_id), why, by)


def recheck_resource(resource_id: int, why: str, by: str = "") -> None:
    _recheck(groups.for_resource(resource_id), why, by)


@receiver(post_save, sender=get_user_model())
def _user_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    if not created:
        recheck_user(instance.pk, "user changed")


@receiver(m2m_changed, sender=get_user_model().groups.through)
def _user_groups_changed(sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any,
                         **kwargs: Any) -> None:
    if action.startswith("post_"):
        if reverse:
            for pk in pk_set or ():
                recheck_user(pk, "group membership changed")
        else:
            recheck_user(instance.pk, "group membership changed")


@receiver(user_logged_out)
def _user_logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None:
        recheck_user(user.pk, "signed out")


@receiver(post_save, sender=Resource)
@receiver(post_delete, sender=Resource)
def _resource_changed(sender: Any, instance: Resource, **kwargs: Any) -> None:
    recheck_resource(instance.pk, "resource changed")


@receiver(m2m_changed, sender=Resource.allowed_groups.through)
@receiver(m2m_changed, sender=Resource.allowed_users.through)
def _resource_sharing_changed(sender: Any, instance: Any, action: str, reverse: bool, **kwargs: Any) -> None:
    if action.startswith("post_") and isinstance(instance, Resource):
        recheck_resource(instance.pk, "sharing changed")
    elif action.startswith("post_"):
        for pk in kwargs.get("pk_set") or ():
            recheck_resource(pk, "sharing changed")


@receiver(post_save, sender=Tier)
def _tier_changed(sender: Any, instance: Tier, **kwargs: Any) -> None:
    _recheck(groups.for_tier(instance.pk), "tier changed")


@receiver(post_save, sender=AccessGrant)
@receiver(post_delete, sender=AccessGrant)
def _grant_changed(sender: Any, instance: AccessGrant, **kwargs: Any) -> None:
    recheck_user(instance.user_id, "access grant changed")


@receiver(post_save, sender=Session)
def _session_saved(sender: Any, instance: Session, **kwargs: Any) -> None:
    """A rotated session key (step-up) carries the sign-in: live desktops follow it there."""
    signins.follow(instance.session_key, instance.get_decoded())
